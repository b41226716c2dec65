"""Fine-tuning on cached frozen activations: settings, the epoch loop and the whole training job."""
