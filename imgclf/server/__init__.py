"""The inference side. It reads the model repository and SavedModels only; it never
imports `imgclf.trainer` (a test enforces this)."""
