"""Running the network over inputs: 2D images, scans, datasets."""
