"""An arm: filter x sampling x selection, and the registries of its parts."""
