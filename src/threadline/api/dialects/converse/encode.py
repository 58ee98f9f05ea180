"""Core objects → AI Hub Converse JSON.

A conversation's `state` sums up its documents: RUNNING while any is being processed,
FAILED when every one failed (and there is at least one), else COMPLETE. Each document also
carries its own `state` (PROCESSING, PROCESSED, FAILED) and `uploadTimestamp`, the optional
fields of the AI Hub SDK's `DocumentDetails`, so a client can tell which file failed, and
a `reason` (Threadline's addition, which the SDK ignores) that says why it failed; the
document metadata carries the same `state` and `reason`.

Threadline renders no page images, so the image paths of a page's layout are empty, and
`ibdoc_path` is a Threadline reference, never a path on the server's disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from threadline.api.native import iso
from threadline.domain.documents import Document, DocumentState, PageLayout
from threadline.domain.entities import AiRecord, Conversation
from threadline.services.documents import UploadOutcome

DOCUMENT_STATE = {
    DocumentState.RUNNING: "PROCESSING",
    DocumentState.COMPLETE: "PROCESSED",
    DocumentState.FAILED: "FAILED",
}


def error(message: str) -> dict[str, Any]:
    """AI Hub's error body (the SDK's `Error` model)."""
    return {"message": message}


def upload_status(outcomes: Sequence[UploadOutcome]) -> dict[str, Any]:
    return {
        "success": [{"name": o.name} for o in outcomes if o.reason is None],
        "failure": [{"name": o.name, "reason": o.reason} for o in outcomes if o.reason],
    }


def created(conversation: Conversation, outcomes: Sequence[UploadOutcome]) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "name": conversation.title,
        "upload_status": upload_status(outcomes),
    }


def summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "name": conversation.title,
        "description": conversation.description,
    }


def state(documents: Sequence[Document]) -> str:
    states = [d.state for d in documents]
    if DocumentState.RUNNING in states:
        return "RUNNING"
    if states and all(s is DocumentState.FAILED for s in states):
        return "FAILED"
    return "COMPLETE"


def info(conversation: Conversation, documents: Sequence[Document]) -> dict[str, Any]:
    return {
        **summary(conversation),
        "state": state(documents),
        "documents": [
            {
                "id": d.id,
                "name": d.name,
                "state": DOCUMENT_STATE[d.state],
                "uploadTimestamp": iso(d.created_at),
                "reason": d.reason,
            }
            for d in documents
        ],
    }


def prompt(record: AiRecord) -> dict[str, Any]:
    return {"prompt_id": record.id.hex, "answer": record.result_text}


def ibdoc_path(document: Document) -> str:
    return f"threadline:documents/{document.id}"


def metadata(document: Document) -> dict[str, Any]:
    return {
        "id": document.id,
        "ibdoc_path": ibdoc_path(document),
        "name": document.name,
        "metadata": [_page(p) for p in document.pages],
        "state": DOCUMENT_STATE[document.state],
        "reason": document.reason,
    }


def _page(page: PageLayout) -> dict[str, Any]:
    return {
        "metadata_list": None,
        "layout": {
            "processed_image_path": "",
            "thumbnail_image_path": "",
            "model_training_image_path": "",
            "page_input_path": "",
            "width": page.width,
            "height": page.height,
            "corrected_rotation": page.rotation,
            "origin_pos": [0, 0],
            "is_blurry": False,
            "blur_factor": 0,
            "is_image_page": page.is_image_page,
            "original_page_number": page.number,
        },
        "annotation_data": None,
        "pdf_doc_metadata": None,
    }
