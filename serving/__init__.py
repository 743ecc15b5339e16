"""Exported models: versioned SavedModels whose signatures take raw inputs."""
