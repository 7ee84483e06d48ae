"""`/gate` and `/edits/{id}/gate`: an edit's finished audit against a policy -> pass | warn | fail."""

from __future__ import annotations

from fastapi import APIRouter

from editaudit.contracts.scopes import Scope
from editaudit.service.deps import SessionDep
from editaudit.service.openapi import op
from editaudit.service.schemas.gate import GateOut, GateRequest
from editaudit.service.services.gating import evaluate_gate

router = APIRouter(tags=["gate"])


@router.get("/edits/{edit_id}/gate", response_model=GateOut, **op("gate_edit", Scope.gate_read, 404, 409))
def gate_edit(edit_id: str, s: SessionDep, policy: str = "default"):
    return evaluate_gate(s, edit_id, policy)


@router.post("/gate", response_model=GateOut, **op("gate", Scope.gate_read, 404, 409))
def gate(body: GateRequest, s: SessionDep):
    return evaluate_gate(s, body.edit_id, body.policy)
