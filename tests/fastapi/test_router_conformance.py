"""The admin API answers as its OpenAPI schema says: cases the property tests
(``test_api_properties.py``) found, kept as plain tests."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.postgres

Admin = tuple[FastAPI, httpx.AsyncClient]


@pytest.mark.parametrize("verb", ["cancel", "stop", "retry", "clear"])
async def test_a_wrong_method_on_an_action_names_post_as_allowed(admin: Admin, verb: str) -> None:
    # "/tasks/cancel" also matches the path of "/tasks/{task_id}": neither a GET taken as a
    # request for a task whose id is "cancel" (a 422) nor a 405 naming the task detail's GET.
    _, client = admin
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"):
        response = await client.request(method, f"/admin/api/tasks/{verb}")
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST", method
        if method != "HEAD":
            assert response.json() == {"detail": "Method Not Allowed"}
