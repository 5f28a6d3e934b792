"""The embedded sample corpus (DESIGN 5): synthetic birds in the exact Kaggle layouts.

Everything is decided up front in the main process from one seeded plan (species, record ids, label
lists, durations, duplicates); each audio file is then rendered by an independent job whose random
stream is a `SeedSequence` spawned for that item, so the corpus does not depend on how many worker
processes render it, nor on their order.

Layout written under `out_dir` (what the readers in `sources.py` expect):

    birdclef-2024/        train_metadata.csv, train_audio/<code>/XC<id>.ogg, unlabeled_soundscapes/,
                          sample_submission.csv, eBird_Taxonomy_v2021.csv
    or, with `layout: "2025"`, instead of birdclef-2024/:
    birdclef-2025/        train.csv (with `collection`), train_audio/<label>/<XC|iNat|CSA><id>.ogg
                          (labels: eBird codes, numeric iNaturalist ids for non-birds),
                          train_soundscapes/H<nn>_<date>_<time>.ogg, sample_submission.csv,
                          taxonomy.csv (with `class_name`)
    Birdclef23/, Birdclef22/   train_metadata.csv, train_audio/<code>/XC<id>.ogg
    Birdclef21/           train_metadata.csv (filename XC<id>.ogg), train_short_audio/<code>/
    Birdclef20/           train.csv, train_audio/<ebird_code>/XC<id>.mp3
    birdclef2024-additional-mp3/additional_audio/<code>/XC<id>.mp3
    labelled_soundscapes/ <id>.ogg + labels.csv (row_id, one 0/1 column per main-competition class)
    near_duplicates.csv   r0, r1 (`<label>/<stem>.ogg` of the main competition's records)

The generator's parts:

    voices.py     species, their voices, syllables and songs
    render.py     signal synthesis: noises, focal recordings and soundscapes
    audiofile.py  writing OGG and MP3 files
    plan.py       the seeded plan: records of every source and soundscape specs
    fields.py     metadata field values every layout shares
    layouts.py    the Kaggle layouts: audio paths and metadata tables
    layout2025.py the BirdCLEF+ 2025 main-competition layout
    corpus.py     the jobs, rendered in parallel, and make_sample_corpus
"""

from birdclef.synth.audiofile import write_audio
from birdclef.synth.corpus import make_sample_corpus
from birdclef.synth.layout2025 import BC25_COLUMNS, TAXONOMY_2025_COLUMNS
from birdclef.synth.layouts import (
    BC20_COLUMNS,
    BC21_COLUMNS,
    BC22_COLUMNS,
    BC24_COLUMNS,
    TAXONOMY_COLUMNS,
)

__all__ = [
    "BC20_COLUMNS",
    "BC21_COLUMNS",
    "BC22_COLUMNS",
    "BC24_COLUMNS",
    "BC25_COLUMNS",
    "TAXONOMY_2025_COLUMNS",
    "TAXONOMY_COLUMNS",
    "make_sample_corpus",
    "write_audio",
]
