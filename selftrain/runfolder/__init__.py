"""The run folder, the public record: folder and manifest, storage, row schemas, budget targets."""
