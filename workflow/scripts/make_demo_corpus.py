"""Rule make_demo_corpus: write the synthetic MIMIC-CXR-format demo corpus."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

from memaudit.corpus.spec import CorpusSpec
from memaudit.corpus.writer import generate_corpus

generate_corpus(CorpusSpec.from_dict(snakemake.params.spec), Path(snakemake.output.card).parent)
