"""Model architectures and their construction from the training configuration."""
