"""Benchmark the prompts stage at MIMIC-CXR size (not a test; prints timings).

Builds a demo corpus with as many reports as MIMIC-CXR (227,835) without images, zips its
report tree the way PhysioNet ships it, and runs the prompts stage on the zip (read without
unpacking), then on the unpacked folder, and times the folder fingerprint that the workflow
computes while it builds the DAG. Target: under 2 minutes on 2 cores.

    .venv/bin/python benchmarks/bench_prompts.py --reports 227835 --workdir /tmp/bench_prompts
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import zipfile
from pathlib import Path

from memaudit.corpus.spec import CorpusSpec
from memaudit.corpus.writer import generate_corpus
from memaudit.prompts.extract import extract_prompts
from memaudit.prompts.markers import count_prompt_markers
from memaudit.prompts.sources import folder_fingerprint


def zip_tree(files_dir: Path, zip_path: Path) -> int:
    """Zip ``files_dir`` as ``files/pXX/...`` members (deflate), like mimic-cxr-reports.zip."""
    n = 0
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for root, _dirs, names in sorted(os.walk(files_dir)):
            for name in sorted(names):
                path = Path(root) / name
                archive.write(path, Path("files") / path.relative_to(files_dir))
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=227_835)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_prompts"))
    parser.add_argument("--reuse", action="store_true", help="reuse an existing corpus and zip")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus_dir = args.workdir / "corpus"
    zip_path = args.workdir / "mimic-cxr-reports.zip"

    if not (args.reuse and zip_path.exists()):
        start = time.perf_counter()
        spec = CorpusSpec(n_studies=args.reports, write_images=False, n_heldout=0)
        generate_corpus(spec, corpus_dir)
        print(f"corpus: {args.reports:,} reports written in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        n = zip_tree(corpus_dir / "files", zip_path)
        size = zip_path.stat().st_size / 2**20
        print(f"zip: {n:,} members, {size:.0f} MiB in {time.perf_counter() - start:.1f} s")

    for label, source in (("zip", zip_path), ("folder", corpus_dir / "files")):
        start = time.perf_counter()
        texts, _report_map, reading = extract_prompts(source)
        prompts, summary = count_prompt_markers(texts, reading)
        seconds = time.perf_counter() - start
        print(
            f"prompts stage on the {label}: {seconds:.1f} s "
            f"({summary['reports_read'] / seconds:,.0f} reports/s), "
            f"{summary['reports_used']:,} used, {len(prompts):,} unique prompts, "
            f"{summary['prompts_with_marker']:,} with marker, skipped {summary['skipped']}"
        )
    start = time.perf_counter()
    fingerprint = folder_fingerprint(corpus_dir / "files")
    print(f"folder fingerprint ({fingerprint}): {time.perf_counter() - start:.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"peak RSS: {peak:.0f} MiB; target < 120 s on 2 cores for the zip")


if __name__ == "__main__":
    main()
