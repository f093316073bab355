"""Process exit codes of ``launchers/train.py``, chosen so a Kubernetes podFailurePolicy can act on them."""
OK = 0
DIVERGED = 65      # EX_DATAERR: too many non-finite steps in a row; last good state checkpointed
FAILED = 70        # EX_SOFTWARE: any other error inside training
RETRY = 75         # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; relaunch to resume
CONFIG_ERROR = 78  # EX_CONFIG: bad config, missing shards or weights; retrying cannot help
