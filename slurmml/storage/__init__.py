"""The object store (S3 or an S3-compatible server): where datasets, artifacts and runs from other machines live.

Layout under the configured `s3://BUCKET/PREFIX/` (docs/data.md says why each part is shaped so):
  blobs/sha256/<2 hex>/<64 hex>          content-addressed bytes: big files, packs of small files, artifacts, code
  datasets/<name>/versions/<000001>.json one immutable version manifest each, written once (conditional put)
  datasets/<name>/aliases/<alias>.json   a movable name for a version (`latest` is computed, never stored)
  runs/<run id>/run.json                 a run shipped from another machine: where and what code it ran
  runs/<run id>/spool/<offset>.jsonl     its spool, as write-once chunks keyed by their byte offset
"""
