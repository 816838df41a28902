"""Rule make_share_secret: the audit secret that keys the share bundle's ids (kept if present)."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))

from memaudit.share import ensure_secret

path = snakemake.output.key
# the log says what happened to the secret, never what it is
print(f"{'created' if ensure_secret(path) else 'kept the existing'} share secret {path}")
