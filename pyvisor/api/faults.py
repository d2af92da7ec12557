"""The API's one error: an HTTP status and Firecracker's `{"fault_message": ...}` body."""
from __future__ import annotations

BAD_REQUEST = 400

NOT_BEFORE_START = "The requested operation is not supported before starting the microVM."
NOT_AFTER_START = "The requested operation is not supported after starting the microVM."


class ApiError(Exception):
    """A request pyvisor refuses; Firecracker answers almost every refusal with 400."""

    def __init__(self, message: str, status: int = BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status

    @property
    def body(self) -> dict[str, str]:
        return {"fault_message": str(self)}
