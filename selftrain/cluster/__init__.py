"""The Ray layer: start-up, actor groups, rollout and critic workers, progress."""
