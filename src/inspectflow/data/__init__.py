"""Dataset readers (one module per on-disk layout) and the ingested-dataset artifact."""
