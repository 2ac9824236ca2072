"""Dataset code: MNIST / Fashion-MNIST IDX files and the HDF5 synthetic format."""
