"""Rule make_share_secret: the audit secret that keys the share bundle's ids (kept if present)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))
from memaudit.jobs import start_job

start_job(snakemake)  # output to the log; a failure ends with one clear line

from memaudit.share import ensure_secret

path = snakemake.output.key
# the log says what happened to the secret, never what it is
print(f"{'created' if ensure_secret(path) else 'kept the existing'} share secret {path}")
