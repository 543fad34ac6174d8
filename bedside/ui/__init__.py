"""The bedside terminal app (Textual); see ``bedside.ui.app`` for the API."""
