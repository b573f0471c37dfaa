"""Protein backbones from real structures: the DSSP reference set of MDAnalysisTests, and a
gemmi reader of PDB / mmCIF files into N, CA, C coordinates.

Data source: the ``MDAnalysisTests`` sdist on PyPI carries 50 single-chain protein structures
(79-173 residues) as ``MDAnalysisTests/data/dssp/<PDB id><chain>.pdb.gz``. Their coordinates come
from the Protein Data Bank (wwPDB data: CC0 1.0). The same folder also holds two test fixtures
that are not structures to learn from and are left out: ``1mr1D_failing.pdb.gz`` (1mr1D with one
C atom deleted) and ``wrong_hydrogens.pdb.gz`` (two residues).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import gemmi
import numpy as np

PACKAGE = "MDAnalysisTests"
DSSP_FOLDER = ("MDAnalysisTests", "data", "dssp")
STRUCTURE_NAME = re.compile(r"^[0-9][0-9a-zA-Z]{3}[0-9A-Za-z]\.pdb\.gz$")
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
BACKBONE_ATOMS = ("N", "CA", "C")


@dataclasses.dataclass
class Backbone:
    """One contiguous backbone segment: coords (L, 3, 3) float32 in Å for atoms N, CA, C;
    sequence: L one-letter codes (X for unknown); name: "<file stem>:<chain>:<first>-<last>"
    with PDB residue numbers."""

    name: str
    coords: np.ndarray
    sequence: str

    def __post_init__(self) -> None:
        if self.coords.ndim != 3 or self.coords.shape[1:] != (3, 3) or len(self.sequence) != len(self.coords):
            raise ValueError(f"Backbone {self.name}: coords must be (L, 3, 3) with L = len(sequence), "
                             f"got {self.coords.shape} and {len(self.sequence)} residues")


def extract_dssp_structures(sdist_path: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Copy the structures of the DSSP folder of an MDAnalysisTests sdist flat into dest.

    Only regular-file members ``<top>/MDAnalysisTests/data/dssp/<PDB id><chain>.pdb.gz`` are read
    (through ``extractfile``, never ``extract``); members with absolute paths, ``..`` or other
    names are ignored, so nothing is written outside dest. Returns the written files, sorted.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(sdist_path, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            safe = (member.isfile() and not member.name.startswith("/") and ".." not in parts
                    and "" not in parts)
            if not (safe and len(parts) == 5 and tuple(parts[1:4]) == DSSP_FOLDER
                    and STRUCTURE_NAME.match(parts[4])):
                continue
            source = archive.extractfile(member)
            with source, open(dest / parts[4], "wb") as target:
                shutil.copyfileobj(source, target)
            written.append(dest / parts[4])
    if not written:
        raise RuntimeError(f"{sdist_path} holds no {'/'.join(DSSP_FOLDER)}/*.pdb.gz structures")
    return sorted(written)


def _source_note(version: str, files: Sequence[Path]) -> str:
    return (f"package: {PACKAGE} {version} (sdist from PyPI, https://pypi.org/project/{PACKAGE}/{version}/)\n"
            f"members: {'/'.join(DSSP_FOLDER)}/<PDB id><chain>.pdb.gz ({len(files)} files)\n"
            "licence: atomic coordinates from the Protein Data Bank (wwPDB), CC0 1.0 Universal; "
            "the MDAnalysisTests package itself is LGPL-3.0-or-later\n")


def _existing(dest: Path, version: str) -> list[Path] | None:
    """The files of a completed fetch of version in dest, or None when dest holds none."""
    note = dest / "SOURCE.txt"
    if not note.is_file():
        return None
    if f"{PACKAGE} {version} " not in note.read_text():
        raise ValueError(f"dest_dir {dest} holds another {PACKAGE} version (see SOURCE.txt); "
                         f"use another folder for version {version}")
    return sorted(dest.glob("*.pdb.gz"))


def fetch_mdanalysis_dssp(dest_dir: str | os.PathLike, version: str = "2.11.0",
                          pip: Sequence[str] | None = None) -> list[Path]:
    """Download the MDAnalysisTests sdist with pip and keep its DSSP structures in dest_dir.

    pip: the command prefix that runs pip (default ``[sys.executable, "-m", "pip"]``). The sdist
    (~60 MB) goes to a temporary folder and is deleted; the structures and a SOURCE.txt are
    written to a sibling temporary folder renamed to dest_dir at the end, so dest_dir is either
    absent or complete. Does nothing when dest_dir already holds a fetch of this version.
    Returns the .pdb.gz files, sorted.
    """
    dest = Path(dest_dir)
    found = _existing(dest, version)
    if found is not None:
        return found
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"dest_dir {dest} exists and is not empty but has no SOURCE.txt; "
                         "remove it or choose another folder")
    command = list(pip) if pip is not None else [sys.executable, "-m", "pip"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as work:
        download = Path(work, "sdist")
        result = subprocess.run([*command, "download", "--no-deps", "--no-binary", ":all:",
                                 f"{PACKAGE}=={version}", "-d", str(download)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pip could not download {PACKAGE}=={version} (exit {result.returncode}; "
                               f"offline?):\n{result.stderr[-2000:]}")
        sdists = [p for p in download.glob("*.tar.gz")
                  if p.name.lower() == f"{PACKAGE.lower()}-{version}.tar.gz"]
        if len(sdists) != 1:
            raise RuntimeError(f"pip download left {sorted(p.name for p in download.iterdir())} in "
                               f"{download}, expected {PACKAGE.lower()}-{version}.tar.gz")
        staging = Path(work, "dssp")
        files = extract_dssp_structures(sdists[0], staging)
        (staging / "SOURCE.txt").write_text(_source_note(version, files))
        try:
            staging.replace(dest)
        except OSError:
            found = _existing(dest, version)  # another process finished first
            if found is None:
                raise
            return found
    return sorted(dest.glob("*.pdb.gz"))


def _structure_files(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(paths_or_dir, (str, os.PathLike)):
        root = Path(paths_or_dir)
        if root.is_dir():
            return sorted(p for p in root.iterdir()
                          if p.is_file() and p.name.lower().removesuffix(".gz").endswith(STRUCTURE_SUFFIXES))
        paths = [root]
    else:
        paths = [Path(p) for p in paths_or_dir]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"structure file {path} does not exist")
    return paths


def _one_letter(name: str) -> str:
    """One-letter code of an amino acid (modified ones map to their parent, MSE -> M), else X."""
    code = gemmi.find_tabulated_residue(name).one_letter_code.upper()
    return code if code.strip() else "X"


def _residue_number(residue: gemmi.Residue) -> str:
    """PDB residue number with its insertion code, e.g. "52" or "52A"."""
    return f"{residue.seqid.num}{residue.seqid.icode.strip()}"


def _segments(path: Path, break_distance: float) -> list[tuple[str, list[gemmi.Residue]]]:
    """Runs of consecutive amino-acid residues with N, CA and C in each chain of the first model,
    split where C(i)-N(i+1) > break_distance. Alternative conformations: the first is kept."""
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as error:  # gemmi's messages do not always name the file
        raise ValueError(f"cannot parse structure file {path}: {error}") from error
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise ValueError(f"cannot parse structure file {path}: no atoms found (not a PDB / mmCIF file?)")
    structure.remove_alternative_conformations()
    runs = []
    for chain in structure[0]:
        current: list[gemmi.Residue] = []
        for residue in chain:
            info = gemmi.find_tabulated_residue(residue.name)
            if info is None or not info.is_amino_acid() or any(not residue.find_atom(a, "*")
                                                               for a in BACKBONE_ATOMS):
                if current:
                    runs.append((chain.name, current))
                current = []
                continue
            if current and current[-1]["C"][0].pos.dist(residue["N"][0].pos) > break_distance:
                runs.append((chain.name, current))
                current = []
            current.append(residue)
        if current:
            runs.append((chain.name, current))
    return runs


def read_backbones(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike], min_length: int = 40,
                   max_length: int = 128, break_distance: float = 2.0) -> list[Backbone]:
    """Backbone segments of every protein chain of PDB / mmCIF files (optionally gzipped).

    paths_or_dir: a folder (its *.pdb, *.ent, *.cif, *.mmcif files, .gz or not), one file or a list.
    Per file: the first model; residues that are amino acids with N, CA and C (first altloc);
    chains split into segments where a residue is missing or C(i)-N(i+1) > break_distance Å.
    Segments shorter than min_length are dropped; longer than max_length they are cut into
    consecutive non-overlapping windows of max_length from the start, and the remainder is kept
    as one more segment when it has at least min_length residues.
    """
    if not isinstance(min_length, int) or min_length < 2:
        raise ValueError(f"min_length must be an int >= 2, got {min_length!r}")
    if not isinstance(max_length, int) or max_length < min_length:
        raise ValueError(f"max_length must be an int >= min_length = {min_length}, got {max_length!r}")
    if break_distance <= 0:
        raise ValueError(f"break_distance must be > 0 Å, got {break_distance}")
    files = _structure_files(paths_or_dir)
    backbones = []
    for path in files:
        stem = path.name.split(".")[0]
        for chain, residues in _segments(path, break_distance):
            for start in range(0, len(residues), max_length):
                window = residues[start:start + max_length]
                if len(window) < min_length:
                    continue
                coords = np.array([[r[a][0].pos.tolist() for a in BACKBONE_ATOMS] for r in window],
                                  dtype=np.float32)
                name = f"{stem}:{chain}:{_residue_number(window[0])}-{_residue_number(window[-1])}"
                backbones.append(Backbone(name, coords, "".join(_one_letter(r.name) for r in window)))
    if not backbones:
        raise ValueError(f"no backbone segment with at least min_length={min_length} residues in "
                         f"{paths_or_dir} ({len(files)} structure files; break_distance={break_distance} Å)")
    return backbones
