"""The Ray layer: start-up, actor groups, the rollout and critic workers and the training ranks."""
