"""Rule make_demo_corpus: write the synthetic MIMIC-CXR-format demo corpus."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

from memaudit.corpus.spec import CorpusSpec
from memaudit.corpus.writer import generate_corpus

generate_corpus(CorpusSpec.from_dict(snakemake.params.spec), Path(snakemake.output.card).parent)
