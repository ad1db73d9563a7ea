"""S3 batch drops: object manifest, batch-drop manifests, format parsers → Arrow, loader."""
