"""Protocol-level fakes of the chat platforms, served on 127.0.0.1 for the real client libraries."""
