"""What the four DCGAN training scripts share: losses, optimizers, plotting and run files."""
