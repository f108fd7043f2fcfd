"""The run folder, the public record: folder and manifest, storage, row schemas, resume checks, budget targets."""
