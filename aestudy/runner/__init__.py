"""The tooling that notebooks never import: `aestudy run`, `sweep`, `report`, `compare` and the `aestudy` command."""
