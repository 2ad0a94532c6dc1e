"""A small RAG backend shaped like the book's, with Gatehouse for accounts and profiles.

Public: ``POST /api/v1/query`` and ``POST /api/v1/select`` answer anyone, and personalise the
answer from the reader's learner profile when a session cookie or bearer token is present.
Protected: ``GET /api/v1/me``, ``GET``/``POST /api/v1/profile``; ``POST /api/v1/feedback``
also needs a verified address. The Gatehouse auth router is mounted at ``/auth``. ``GET /``
is a small account page (``static/``: plain HTML and JavaScript, no build step): sign-up with
the learner profile, sign-in with the second factor (authenticator app, passkey or recovery
code), passwordless sign-in with a passkey, authenticator-app enrolment and passkey
registration. Passkeys need the page's origin in Gatehouse's ``GATEHOUSE_WEBAUTHN_ORIGINS``
(default ``http://localhost:3000,http://localhost:8000``; see README.md).

The "retrieval" is a fixed list of passages and a word-overlap score: the point is the wiring.

Run beside Gatehouse (see README.md)::

    GATEHOUSE_TARGET=localhost:50051 uvicorn main:app --reload
"""

# No `from __future__ import annotations`: FastAPI must resolve the route annotations,
# which use aliases local to create_app().

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Final, cast

from fastapi import Depends, FastAPI, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from gatehouse import AsyncClient, AsyncServiceClient
from gatehouse.fastapi import CurrentUser, Gatehouse, ProfileIn, ProfileOut, SameSite, UserOut

PASSAGES: tuple[tuple[str, str], ...] = (
    (
        "Chapter 2: ROS 2 nodes",
        "A ROS 2 node is a process that publishes and subscribes to topics; nodes exchange "
        "messages through the DDS middleware.",
    ),
    (
        "Chapter 3: Kinematics",
        "Forward kinematics computes where a humanoid robot's hand is from its joint angles; "
        "inverse kinematics finds the joint angles that reach a target.",
    ),
    (
        "Chapter 5: Vision-language-action models",
        "A vision-language-action model maps camera images and an instruction to robot actions, "
        "trained on demonstrations.",
    ),
)

#: The account page's files, served at ``/``, ``/app.js`` and ``/app.css``.
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: The page loads only its own script and style; the QR code is a data: image (an SVG as an
#: image runs no script). No framing (clickjacking), no <base> or form targets elsewhere.
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}

_LEVEL_ADVICE = {
    "beginner": "in plain steps for a beginner programmer",
    "intermediate": "for an intermediate programmer",
    "advanced": "tersely, for an advanced programmer",
}
_STYLE_ADVICE = {
    "theory": "starting from the theory",
    "code_first": "code first, with a short example",
    "visual": "with a diagram-style outline",
    "mixed": "mixing theory and code",
}


class QueryIn(BaseModel):
    """A question about the book."""

    question: str = Field(min_length=1, max_length=2000)


class SelectIn(BaseModel):
    """Text the reader selected on a page, and an optional question about it."""

    selected_text: str = Field(min_length=1, max_length=5000)
    question: str | None = Field(default=None, max_length=2000)


class FeedbackIn(BaseModel):
    """A reader's remark on an answer or a chapter."""

    comment: str = Field(min_length=1, max_length=2000)
    question: str | None = Field(default=None, max_length=2000)


class FeedbackOut(BaseModel):
    """Feedback received; the authors may reply to ``reply_to``."""

    received: bool
    reply_to: str


class AnswerOut(BaseModel):
    """The answer, its sources, and whether it was tailored to the reader's profile."""

    answer: str
    sources: list[str]
    personalized: bool


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def retrieve(text: str, k: int = 2) -> list[tuple[str, str]]:
    """The k passages sharing the most words with ``text`` (a stand-in for vector search)."""
    wanted = _words(text)
    ranked = sorted(PASSAGES, key=lambda p: len(wanted & _words(p[1])), reverse=True)
    return ranked[:k]


def personalise(profile: ProfileOut | None) -> str | None:
    """How to pitch the answer for this reader, or None when there is nothing to go on."""
    if profile is None:
        return None
    parts = []
    if profile.programming_level:
        parts.append(_LEVEL_ADVICE[profile.programming_level])
    if profile.learning_style:
        parts.append(_STYLE_ADVICE[profile.learning_style])
    if profile.programming_languages:
        parts.append("with examples in " + ", ".join(profile.programming_languages))
    return ", ".join(parts) or None


def compose(question: str, passages: list[tuple[str, str]], pitch: str | None) -> str:
    """A fake generated answer built from the retrieved passages."""
    context = " ".join(text for _, text in passages)
    intro = f"Explained {pitch}: " if pitch else ""
    return f"{intro}{question.strip()} — {context}"


def create_app(
    target: str | None = None,
    *,
    cookie_secure: bool | None = None,
    cache_ttl: float | None = None,
    service_api_key: str | None = None,
    oauth_base_url: str | None = None,
    trusted_origins: list[str] | None = None,
    cookie_host_prefix: bool | None = None,
    cookie_samesite: SameSite | None = None,
) -> FastAPI:
    """Builds the app. ``target`` defaults to ``$GATEHOUSE_TARGET`` or ``localhost:50051``;
    ``cookie_secure`` to ``$GATEHOUSE_COOKIE_SECURE`` (``true`` unless set to ``false``);
    ``cache_ttl`` (seconds, 0 = no session cache) to ``$GATEHOUSE_CACHE_TTL``;
    ``service_api_key`` (a Gatehouse service API key: the cache then follows the revocation
    stream and drops revoked sessions at once) to ``$GATEHOUSE_SERVICE_API_KEY``;
    ``oauth_base_url`` (this app's public URL: provider sign-in then calls back to
    ``<url>/auth/oauth/{provider}/callback``, which must be in Gatehouse's
    ``GATEHOUSE_*_REDIRECT_URIS``) to ``$GATEHOUSE_OAUTH_BASE_URL``;
    ``trusted_origins`` (front ends on other origins allowed to send cookie requests that
    change state; they also get CORS with credentials) to ``$GATEHOUSE_TRUSTED_ORIGINS``
    (comma-separated);
    ``cookie_host_prefix`` (the ``__Host-`` cookie) to ``$GATEHOUSE_COOKIE_HOST_PREFIX``;
    ``cookie_samesite`` (``none`` for a front end on another site) to
    ``$GATEHOUSE_COOKIE_SAMESITE`` (``lax`` unless set)."""
    target = target or os.environ.get("GATEHOUSE_TARGET", "localhost:50051")
    if cookie_secure is None:
        cookie_secure = os.environ.get("GATEHOUSE_COOKIE_SECURE", "true").lower() != "false"
    if cache_ttl is None:
        cache_ttl = float(os.environ.get("GATEHOUSE_CACHE_TTL", "0"))
    service_api_key = service_api_key or os.environ.get("GATEHOUSE_SERVICE_API_KEY") or None
    service = AsyncServiceClient(target, api_key=service_api_key) if service_api_key else None
    oauth_base_url = oauth_base_url or os.environ.get("GATEHOUSE_OAUTH_BASE_URL") or None
    if trusted_origins is None:
        listed = os.environ.get("GATEHOUSE_TRUSTED_ORIGINS", "").split(",")
        trusted_origins = [o.strip() for o in listed if o.strip()]
    if cookie_host_prefix is None:
        cookie_host_prefix = os.environ.get("GATEHOUSE_COOKIE_HOST_PREFIX", "").lower() == "true"
    if cookie_samesite is None:
        # Any case; Gatehouse refuses an unknown value (and "none" without Secure).
        cookie_samesite = cast(SameSite, os.environ.get("GATEHOUSE_COOKIE_SAMESITE", "lax"))
    gatehouse = Gatehouse(
        AsyncClient(target),
        cookie_secure=cookie_secure,
        cache_ttl=cache_ttl,
        service=service,
        oauth_base_url=oauth_base_url,
        trusted_origins=trusted_origins,
        cookie_host_prefix=cookie_host_prefix,
        cookie_samesite=cookie_samesite,
    )

    app = FastAPI(
        title="Physical AI book backend (Gatehouse example)", lifespan=gatehouse.lifespan
    )
    app.state.gatehouse = gatehouse
    gatehouse.install(app)
    if trusted_origins:
        # A front end on another origin calls with credentials: CORS names it exactly (never
        # "*"), as the cross-site check does; gatehouse.trusted_origins holds them normalised
        # (no trailing slash, no default port), as browsers send Origin.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(gatehouse.trusted_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["content-type", "authorization"],
            # So a page on a trusted origin can read when to retry after a 429 or 503.
            expose_headers=["retry-after"],
        )
    app.include_router(gatehouse.router(), prefix="/auth")

    Reader = Annotated[CurrentUser | None, Depends(gatehouse.optional_user)]
    SignedIn = Annotated[CurrentUser, Depends(gatehouse.current_user)]
    Verified = Annotated[CurrentUser, Depends(gatehouse.current_user(verified=True))]

    async def reader_profile(reader: CurrentUser | None) -> ProfileOut | None:
        if reader is None:
            return None
        return ProfileOut.from_proto(await gatehouse.client.get_profile(token=reader.token))

    @app.post("/api/v1/query")
    async def query(body: QueryIn, reader: Reader) -> AnswerOut:
        """Answers a question about the book; personalised for signed-in readers."""
        pitch = personalise(await reader_profile(reader))
        passages = retrieve(body.question)
        return AnswerOut(
            answer=compose(body.question, passages, pitch),
            sources=[title for title, _ in passages],
            personalized=pitch is not None,
        )

    @app.post("/api/v1/select")
    async def select(body: SelectIn, reader: Reader) -> AnswerOut:
        """Explains a selected passage; personalised for signed-in readers."""
        pitch = personalise(await reader_profile(reader))
        question = body.question or f"What does this mean: {body.selected_text}"
        passages = retrieve(f"{body.selected_text} {question}", k=1)
        return AnswerOut(
            answer=compose(question, passages, pitch),
            sources=[title for title, _ in passages],
            personalized=pitch is not None,
        )

    @app.get("/api/v1/me")
    async def me(user: SignedIn) -> UserOut:
        """The signed-in reader (for the front end's header and account page)."""
        return user.user

    @app.post("/api/v1/feedback", status_code=status.HTTP_202_ACCEPTED)
    async def feedback(body: FeedbackIn, user: Verified) -> FeedbackOut:
        """Takes a reader's feedback. The authors may answer by mail, so the address must be
        verified (403 until it is)."""
        return FeedbackOut(received=True, reply_to=user.user.email)

    @app.get("/api/v1/profile")
    async def get_profile(user: SignedIn) -> ProfileOut:
        """The signed-in reader's profile."""
        return ProfileOut.from_proto(await gatehouse.client.get_profile(token=user.token))

    @app.post("/api/v1/profile")
    async def update_profile(body: ProfileIn, user: SignedIn) -> ProfileOut:
        """Changes the fields present in the body (null clears one)."""
        return await gatehouse.update_profile(user, body)

    def page_route(name: str, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
        """A route serving one fixed file of the page (no parameters: nothing to traverse)."""

        async def serve() -> FileResponse:
            return FileResponse(
                STATIC_DIR / name,
                media_type=media_type,
                headers={
                    "Content-Security-Policy": PAGE_CSP,
                    "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-cache",
                },
            )

        return serve

    for path, (name, media_type) in _PAGE_FILES.items():
        app.add_api_route(
            path, page_route(name, media_type), methods=["GET"], include_in_schema=False
        )

    return app


app = create_app()
