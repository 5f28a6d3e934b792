"""The seeded plan, decided in the main process: species, records of every source (ids, labels,
durations, duplicates, nasty cases) and soundscapes, each sound with its own spawned seed.

The main competition's records (`records[MAIN]`) are written as birdclef-2024 or, with
`make_sample.layout: "2025"`, as birdclef-2025; the plan_2025 step, run only then, draws the 2025
names after everything else, so a 2024 corpus is the same whichever layouts exist."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from birdclef.config import MakeSampleConfig
from birdclef.synth.render import FocalSpec, SoundscapeSpec
from birdclef.synth.voices import SR, _add_confusable_pairs, _make_species

FAKE_SECONDARY = "zzfake1"
MAIN = "main"  # the records of the main competition (2024 or 2025)

# Share of each extra source's records that reuse the record id (and audio) of an earlier source.
# The real data has such duplicates, which is why the merge deduplicates by record name.
DUPLICATES_OF = {
    "bc23": ((MAIN, 0.08),),
    "bc22": (("bc23", 0.12), (MAIN, 0.04)),
    "bc21": (("bc22", 0.10),),
    "bc20": (("bc21", 0.08), (MAIN, 0.04)),
    "bc00": ((MAIN, 0.10),),
}
# BirdCLEF+ 2025: a few rare competition species are these classes, labelled by numeric iNaturalist
# taxon ids; the others are birds (Aves) with eBird codes.
NON_BIRD_CLASSES = ("Insecta", "Amphibia", "Mammalia")
BIRDS = "Aves"
N_NON_2024_SPECIES = 4  # fake species outside the competition (previous years, bc00, taxonomy)


@dataclass
class Record:
    """One row of a metadata table (or one bc00 file)."""

    source: str
    xc_id: int
    code: str
    secondaries: list[str]
    audio: FocalSpec
    fmt: str = "ogg"
    sample_rate: int = SR
    channels: int = 1
    trim: tuple[float, float] = (0.0, 0.0)
    gain_db: float = 0.0
    extra_folders: list[str] = field(default_factory=list)  # two-folder records (main)
    nasty: str = ""
    collection: str = "XC"  # where the record comes from: XC (xeno-canto), iNat or CSA (2025)

    @property
    def stem(self) -> str:
        """The file stem, the record's identity across sources: XC134896, iNat1216197, CSA36385."""
        return f"{self.collection}{self.xc_id}"


class _Picker:
    """Draws main records for special roles (duplicates, two folders, nasty), each at most once."""

    def __init__(self, rows: list[Record], rng: np.random.Generator) -> None:
        self.rows = rows
        self.rng = rng
        self.taken: set[int] = set()

    def pick(self, code: str | None = None, min_seconds: float = 0.0) -> Record:
        """A record not drawn yet (of species `code` if given), `min_seconds` long where one is."""
        free = [
            r for r in self.rows
            if (code is None or r.code == code) and r.xc_id not in self.taken
        ]  # fmt: skip
        pool = [r for r in free if r.audio.seconds >= min_seconds] or free
        r = pool[int(self.rng.integers(len(pool)))]
        self.taken.add(r.xc_id)
        return r


class _Planner:
    def __init__(self, cfg: MakeSampleConfig) -> None:
        if cfg.record_seconds_min > cfg.record_seconds_max:
            raise ValueError(
                f"make_sample: record_seconds_min ({cfg.record_seconds_min}) > "
                f"record_seconds_max ({cfg.record_seconds_max})"
            )
        self.cfg = cfg
        plan_seq, self.audio_seq = np.random.SeedSequence(cfg.seed).spawn(2)
        self.rng = np.random.default_rng(plan_seq)
        self.used_ids: set[int] = set()
        all_species = _make_species(self.rng, cfg.n_species + N_NON_2024_SPECIES)
        all_species = _add_confusable_pairs(self.rng, all_species)
        self.species = sorted(all_species[: cfg.n_species], key=lambda s: s.code)
        self.others = all_species[cfg.n_species :]  # not competition species
        self.by_code = {s.code: s for s in all_species}
        self.codes = [s.code for s in self.species]
        # Most common species first, in a seeded order that is not alphabetical.
        self.by_frequency = [self.codes[int(i)] for i in self.rng.permutation(len(self.codes))]
        self.records: dict[str, list[Record]] = {}
        self.near_duplicates: list[tuple[Record, Record]] = []  # main pairs (r0, r1)
        # Each competition species' label in the main layout, and its taxonomic class (plan_2025).
        self.labels = {c: c for c in self.codes}
        self.class_names = dict.fromkeys(self.codes, BIRDS)

    def new_seed(self) -> np.random.SeedSequence:
        return self.audio_seq.spawn(1)[0]

    def new_id(self) -> int:
        while True:
            xc = int(self.rng.integers(10_000, 1_000_000))
            if xc not in self.used_ids:
                self.used_ids.add(xc)
                return xc

    def seconds(self) -> float:
        # Skewed short (median 8 s, two thirds within 4-15 s, a tail to the maximum): audio
        # encoding is most of the generation time.
        lo, hi = self.cfg.record_seconds_min, self.cfg.record_seconds_max
        median = min(max(8.0, lo), hi)
        return round(float(np.clip(median * self.rng.lognormal(0, 0.6), lo, hi)), 2)

    def secondaries_for(self, code: str) -> list[str]:
        if self.rng.random() >= 0.2:
            return []
        pool = [c for c in self.codes if c != code]
        chosen = list(
            self.rng.choice(pool, size=min(len(pool), int(self.rng.integers(1, 3))), replace=False)
        )
        if self.rng.random() < 0.15:  # a species outside the competition, as in the real lists
            chosen.append(self.others[int(self.rng.integers(len(self.others)))].code)
        return [str(c) for c in chosen]

    def new_record(self, source: str, code: str) -> Record:
        secondaries = self.secondaries_for(code)
        spec = FocalSpec(
            seed=self.new_seed(),
            seconds=self.seconds(),
            primary=self.by_code[code].voice,
            secondaries=tuple(self.by_code[c].voice for c in secondaries),
        )
        return Record(source, self.new_id(), code, secondaries, spec)

    def extra_count(self, code: str) -> int:
        """Records of `code` in one extra source: common species are common in every year too."""
        if code not in self.by_frequency:
            return self.cfg.extra_records_per_species
        rank = self.by_frequency.index(code)
        weight = 1.5 - rank / max(len(self.codes) - 1, 1)  # 1.5 for the most common, 0.5 the rarest
        return int(round(self.cfg.extra_records_per_species * weight))

    @property
    def classes(self) -> list[str]:
        """The main competition's labels, sorted: the sample submission's columns."""
        return sorted(self.labels.values())

    # -- sources ---------------------------------------------------------------------------------

    def plan_all(self) -> None:
        self.plan_main()
        n_others = len(self.others)
        for source in ("bc23", "bc22", "bc21", "bc20"):
            k = int(self.rng.integers(1, 3))
            extra = [
                self.others[int(i)].code
                for i in self.rng.choice(n_others - 1, size=k, replace=False)
            ]
            self.plan_extra(source, self.codes + extra, "mp3" if source == "bc20" else "ogg")
        # bc00: most species, including frequent ones, plus one species outside the competition.
        dropped = set(
            self.rng.choice(
                self.by_frequency[2:], size=len(self.codes) // 4, replace=False
            ).tolist()
        )
        bc00_species = [c for c in self.codes if c not in dropped] + [self.others[0].code]
        self.plan_extra("bc00", bc00_species, "mp3")
        if self.cfg.layout == "2025":
            self.plan_2025()

    def plan_2025(self) -> None:
        """BirdCLEF+ 2025 names: rare species become non-birds labelled by a numeric iNaturalist
        taxon id, and main records found in no other source may come from iNaturalist or the
        Colombian Sound Archive (CSA); non-birds only do. The rarest species stays a bird, so
        earlier years (which have birds only) still fill a species below the cap."""
        n_non_birds = min(len(NON_BIRD_CLASSES), len(self.codes) // 2)
        for code, class_name in zip(self.by_frequency[-2::-1][:n_non_birds], NON_BIRD_CLASSES):
            self.labels[code] = self.new_taxon_id()
            self.class_names[code] = class_name
        shared = {r.xc_id for source, rows in self.records.items() if source != MAIN for r in rows}
        for r in self.records[MAIN]:
            if r.xc_id in shared:
                continue  # the same XC record in an earlier year: its id must match there
            non_bird = self.class_names[r.code] != BIRDS
            pool = ["iNat", "CSA"] if non_bird else ["XC"] * 8 + ["iNat", "CSA"]
            r.collection = str(self.rng.choice(pool))

    def new_taxon_id(self) -> str:
        """A numeric iNaturalist-style taxon id, as the string it is everywhere."""
        while True:
            taxon = str(int(self.rng.integers(10_000, 2_000_000)))
            if taxon not in self.labels.values():
                return taxon

    def plan_main(self) -> None:
        cfg = self.cfg
        counts = np.round(
            np.geomspace(cfg.bc24_records_max, cfg.bc24_records_min, len(self.codes))
        ).astype(int)
        rows = [
            self.new_record(MAIN, code)
            for code, k in zip(self.by_frequency, counts, strict=True)
            for _ in range(k)
        ]
        picker = _Picker(rows, self.rng)
        self._plan_near_duplicates(picker)
        self._plan_two_folder_records(picker)
        self._plan_nasty_records(rows, picker)
        self.records[MAIN] = rows

    def _plan_near_duplicates(self, picker: _Picker) -> None:
        # Near duplicates: r1 is a slightly trimmed, re-gained copy of r0 in the same folder.
        common = self.by_frequency[: max(3, len(self.codes) // 2)]
        for k in range(3):
            code = common[k % len(common)]
            r0 = picker.pick(code, min_seconds=4.0)
            r1 = picker.pick(code)
            r1.audio, r1.secondaries = r0.audio, list(r0.secondaries)
            r1.trim = (
                round(float(self.rng.uniform(0.05, 0.5)), 3),
                round(float(self.rng.uniform(0, 0.5)), 3),
            )
            r1.trim = (min(r1.trim[0], r0.audio.seconds / 8), min(r1.trim[1], r0.audio.seconds / 8))
            r1.gain_db = round(float(self.rng.uniform(-3, 3)), 2)
            self.near_duplicates.append((r0, r1))
        # ...and one pair across two species folders, which consumers ignore.
        a, b = self.by_frequency[0], self.by_frequency[1]
        r0, r1 = picker.pick(a, min_seconds=4.0), picker.pick(b)
        r1.audio = r0.audio
        r1.gain_db = round(float(self.rng.uniform(-2, 2)), 2)
        self.near_duplicates.append((r0, r1))

    def _plan_two_folder_records(self, picker: _Picker) -> None:
        # Two-folder records: one file in two species folders, two metadata rows.
        for k in range(2):
            a = self.by_frequency[(2 + k) % len(self.codes)]
            b = self.by_frequency[(5 + k) % len(self.codes)]
            r = picker.pick(a)
            r.secondaries = [b]
            r.audio = replace(r.audio, secondaries=(self.by_code[b].voice,))
            r.extra_folders = [b]

    def _plan_nasty_records(self, rows: list[Record], picker: _Picker) -> None:
        # Nasty but legal records.
        for nasty in ("stereo", "sr44100", "short", "zzfake", "exact10"):
            picker.pick().nasty = nasty
        for r in rows:
            if r.nasty == "stereo":
                r.channels = 2
            elif r.nasty == "sr44100":
                r.sample_rate = 44100
            elif r.nasty == "short":
                r.audio = replace(r.audio, seconds=2.5)
            elif r.nasty == "exact10":
                r.audio = replace(r.audio, seconds=10.0)
            elif r.nasty == "zzfake":
                r.secondaries = [*r.secondaries, FAKE_SECONDARY]

    def plan_extra(self, source: str, species: list[str], fmt: str) -> None:
        slots = [code for code in species for _ in range(self.extra_count(code))]
        rows = self._duplicates_of_earlier(source, slots)
        out = [
            r if r is not None else self.new_record(source, code)
            for r, code in zip(rows, slots, strict=True)
        ]
        for r in out:
            r.source, r.fmt = source, fmt
            if source == "bc20":  # the 2020 mp3s come at several rates, some in stereo
                r.sample_rate = SR if self.rng.random() < 0.75 else 44100
                r.channels = 1 if self.rng.random() < 0.85 else 2
        self.records[source] = out

    def _duplicates_of_earlier(self, source: str, slots: list[str]) -> list[Record | None]:
        """Per slot (a species code) of `source`, a copy of an earlier source's record of that
        species, or None: each earlier source in DUPLICATES_OF fills its share of the slots."""
        rows: list[Record | None] = [None] * len(slots)
        reused: set[int] = set()
        for earlier, share in DUPLICATES_OF[source]:
            candidates = self.records.get(earlier, [])
            n_dup = max(1, int(round(share * len(slots)))) if slots and candidates else 0
            for i in self.rng.permutation(len(slots)):
                if n_dup == 0:
                    break
                if rows[i] is not None:
                    continue
                pool = [r for r in candidates if r.code == slots[i] and r.xc_id not in reused]
                if not pool:
                    continue
                original = pool[int(self.rng.integers(len(pool)))]
                reused.add(original.xc_id)
                rows[i] = Record(
                    source,
                    original.xc_id,
                    original.code,
                    list(original.secondaries),
                    original.audio,
                )
                n_dup -= 1
        return rows

    # -- soundscapes -----------------------------------------------------------------------------

    def soundscape_specs(self, n: int, seconds: float) -> list[tuple[int, SoundscapeSpec]]:
        voices = tuple((s.code, s.voice) for s in self.species)
        distant = tuple(s.voice for s in self.others)
        out = []
        for _ in range(n):
            spec = SoundscapeSpec(self.new_seed(), float(seconds), voices, distant)
            out.append((self.new_id(), spec))
        return out
