"""export: a dataset directory for the rest of the ecosystem (HF datasets with a dataset card,
webdataset, imagefolder)."""
