// Exported so that every file of this target sees the shared helpers (TemporaryDirectory).
@_exported import TestSupport
