"""Small TrainerCallbacks, one job each."""
