"""The typed Python client of the editaudit API: one method per operation of the OpenAPI schema, named after its
operationId, returning TypedDicts (`editaudit.client.types`). It needs only httpx: no torch, no server code.

    from editaudit.client import ApiError, Client

    with Client("http://127.0.0.1:8000", key="ea_...") as api:          # or $EDITAUDIT_URL / $EDITAUDIT_API_KEY
        model = api.upload_model("model.safetensors", {"arch": "editaudit/smallcnn", "num_classes": 10,
                                                       "input_shape": [1, 8, 8]})
        edit_set = api.upload_dataset("failures.npz")
        job = api.submit_edit({"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"],
                               "edit_set": edit_set["id"], "test_set": "builtin:digits-test"},
                              idempotency_key="pr-123")
        edit = api.wait_for_edit(job["id"], on_progress=lambda e: print(e["status"], e["progress"]))
        audit = api.get_audit(job["audit_id"])
        api.download_edit_weights(job["id"], "edited.safetensors")     # streamed, sha256 verified
        for e in api.iter_edits(status="failed"):                      # follows next_cursor
            print(e["id"], e["method"])
"""

from editaudit.client.api import Client
from editaudit.client.errors import ApiError, ChecksumError, ClientError, IncompleteDownload
from editaudit.client.http import DEFAULT_URL, Operation, default_key, default_url, operations

__all__ = ["ApiError", "ChecksumError", "Client", "ClientError", "DEFAULT_URL", "IncompleteDownload", "Operation",
           "default_key", "default_url", "operations"]
