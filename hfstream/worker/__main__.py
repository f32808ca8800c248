"""Entry point: ``python -m hfstream.worker --spec JSON [...]``."""

import os
import sys

from hfstream.worker.main import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # daemon threads (heartbeat, stdin watch) must not delay or break shutdown
