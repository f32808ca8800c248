"""The worker subprocess: reads one shard of a dataset and writes protocol lines on stdout.

Run as ``python -m hfstream.worker --spec JSON``; this package is the only place that imports
``datasets`` (and only on the ``datasets`` path, see ``hfstream.worker.hf``).
"""
