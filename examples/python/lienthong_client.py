#!/usr/bin/env python3
"""A lienthong client in Python, written the way an agency's integrator would write one.

It uses nothing but the public contract: the `.proto` files in `proto/lienthong/v1/`, compiled at
run time by `grpcio-tools` into a temporary directory, and the `grpcio` runtime. It then walks one
birth-group dossier (procedure 2.000986: birth registration, then residence registration and the
child's health-insurance card in parallel, then the result handed back) through a running server:

  1. the one-stop desk (`ubnd-xa`) submits the dossier, retries the submission with the same
     idempotency key (the server answers `replayed = true`), and sees the error statuses an
     integrator must handle (no token, a reused key, returning the result too early);
  2. the justice office (`tu-phap`) streams its tasks, completes `register-birth`, and resumes its
     stream from the stored cursor to show that nothing is delivered twice;
  3. the police (`cong-an`) and social insurance (`bhxh`) stream their tasks at the same time, in
     two threads, and complete their parallel steps;
  4. the desk completes `return-result` and hands the result back, which closes the dossier;
  5. the desk reads the history and checks the hash chain from the raw bytes alone.

The last line on stdout is one JSON object summarising the run; progress goes to stderr. The exit
status is 0 when every check passed and 1 (with a `FAILED:` line saying what went wrong) otherwise.

Usage, from the repository root:

    scripts/python-env.sh                                   # .tools/venv with the pinned packages
    lienthong serve --data data --auth examples/auth.toml   # in another terminal
    .tools/venv/bin/python examples/python/lienthong_client.py --addr 127.0.0.1:50051

See README.md beside this file for the conventions it illustrates.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

# The repository's `proto/` directory, relative to this file (examples/python/).
PROTO_DIR_DEFAULT = Path(__file__).resolve().parent.parent.parent / "proto"
# National code of the birth group (workflows/procedures/birth.toml).
BIRTH_PROCEDURE = "2.000986"
# `prev_hash` of the first event of every dossier (events.proto, Envelope.prev_hash).
ZERO_HASH = bytes(32)
# Status codes after which the same request, with the same idempotency key, may be sent again:
# the server runs a command at most once per key, so a retry can never do it twice.
RETRYABLE = (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE)
# Attempts per call for those codes, and the first pause between attempts (doubled each time).
CALL_ATTEMPTS_MAX = 5
RETRY_PAUSE_S_FIRST = 0.1


class CheckError(Exception):
    """A check of this example failed; the message says which one and what was seen."""


def log(message: str) -> None:
    """Progress for the person running the example (stderr, so stdout stays one JSON line)."""
    print(f"lienthong_client: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. Stubs: generated from proto/ alone.
# --------------------------------------------------------------------------------------------


def generate_stubs(proto_dir: Path, out_dir: Path) -> types.SimpleNamespace:
    """Compiles every `lienthong/v1/*.proto` with grpcio-tools' bundled protoc into `out_dir`
    and imports the result.

    This is the same as running, once, in your own build:

        python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen \\
            proto/lienthong/v1/*.proto

    `google/protobuf/timestamp.proto` is found in grpcio-tools' own include directory.
    """
    files = sorted(
        p.relative_to(proto_dir).as_posix() for p in proto_dir.glob("lienthong/v1/*.proto")
    )
    if not files:
        raise CheckError(
            f"no .proto files in {proto_dir}/lienthong/v1: pass --proto-dir PATH/TO/proto"
        )
    well_known = resources.files("grpc_tools") / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    if rc != 0:
        raise CheckError(
            f"grpc_tools.protoc failed (exit {rc}) on {proto_dir}: see its message above"
        )
    # The generated modules import each other as `lienthong.v1.<name>_pb2`.
    sys.path.insert(0, str(out_dir))

    def load(name: str) -> Any:
        return importlib.import_module(f"lienthong.v1.{name}")

    return types.SimpleNamespace(
        events=load("events_pb2"),
        dossier=load("dossier_pb2"),
        dossier_grpc=load("dossier_pb2_grpc"),
        agency=load("agency_pb2"),
        agency_grpc=load("agency_pb2_grpc"),
    )


# --------------------------------------------------------------------------------------------
# 2. Identity: one bearer token per agency, sent as call metadata.
# --------------------------------------------------------------------------------------------


@dataclass
class Caller:
    """One agency's system talking to the server.

    Identity travels with every call as `authorization: Bearer <token>` metadata. All callers of
    this example share one channel (one HTTP/2 connection); a real agency system has its own.
    """

    # Agency code, as in workflows/agencies.toml (for messages and officer names).
    agency: str
    # The bearer token the server's auth file knows (its SHA-256 is in examples/auth.toml).
    token: str
    # DossierService stub: Submit, Get, History, ReturnResult ...
    dossiers: Any
    # AgencyService stub: StreamTasks, CompleteStep ...
    tasks: Any

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


# --------------------------------------------------------------------------------------------
# 3. Errors: the status code, and the details the server attaches.
# --------------------------------------------------------------------------------------------


def _rpc_detail_types() -> types.SimpleNamespace:
    """Message classes for the parts of `google.rpc.Status`, `ErrorInfo` and `BadRequest` this
    example reads, declared here (wire-compatible subsets) so that it needs no package beyond
    grpcio and protobuf. In your own code, `grpcio-status` does this for you:
    `grpc_status.rpc_status.from_call(err)`.
    """
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="lienthong_example/rpc_details.proto", package="lienthong_example", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fdp.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    # google.protobuf.Any: which message, and its bytes.
    message("Any", ("type_url", 1, f.TYPE_STRING, one, ""), ("value", 2, f.TYPE_BYTES, one, ""))
    # google.rpc.Status: what `grpc-status-details-bin` trailing metadata holds.
    message(
        "Status",
        ("code", 1, f.TYPE_INT32, one, ""),
        ("message", 2, f.TYPE_STRING, one, ""),
        ("details", 3, f.TYPE_MESSAGE, many, ".lienthong_example.Any"),
    )
    # google.rpc.ErrorInfo: `reason` is the stable code (e.g. `step-not-open`).
    message(
        "ErrorInfo", ("reason", 1, f.TYPE_STRING, one, ""), ("domain", 2, f.TYPE_STRING, one, "")
    )
    # google.rpc.BadRequest: which request fields are wrong, and why.
    message(
        "FieldViolation",
        ("field", 1, f.TYPE_STRING, one, ""),
        ("description", 2, f.TYPE_STRING, one, ""),
    )
    message(
        "BadRequest",
        ("field_violations", 1, f.TYPE_MESSAGE, many, ".lienthong_example.FieldViolation"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"lienthong_example.{name}")
        )

    return types.SimpleNamespace(
        Status=cls("Status"), ErrorInfo=cls("ErrorInfo"), BadRequest=cls("BadRequest")
    )


RPC_DETAILS = _rpc_detail_types()


def error_details(err: grpc.RpcError) -> tuple[str, list[str]]:
    """The `ErrorInfo.reason` (empty if none) and the `BadRequest` field violations of an error."""
    reason, fields = "", []
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in RPC_DETAILS.Status.FromString(value).details:
            if detail.type_url.endswith("/google.rpc.ErrorInfo"):
                reason = RPC_DETAILS.ErrorInfo.FromString(detail.value).reason
            elif detail.type_url.endswith("/google.rpc.BadRequest"):
                bad = RPC_DETAILS.BadRequest.FromString(detail.value)
                fields += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return reason, fields


def describe(err: grpc.RpcError) -> str:
    """One line for a failed call: code, message, stable reason, bad fields."""
    reason, fields = error_details(err)
    text = f"{err.code().name}: {err.details()}"
    if reason:
        text += f" (reason `{reason}`)"
    if fields:
        text += " [" + "; ".join(fields) + "]"
    return text


def call(
    who: Caller, label: str, method: Callable[..., Any], request: Any, timeout_s: float
) -> Any:
    """Calls a unary RPC as `who`.

    ABORTED (another writer changed the dossier at the same moment) and UNAVAILABLE are retried
    with exactly the same request, hence the same idempotency key: the server runs the command
    at most once and answers a retry of a command it already ran with the first answer.
    """
    for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
        try:
            return method(request, metadata=who.metadata(), timeout=timeout_s)
        except grpc.RpcError as err:
            if err.code() in RETRYABLE and attempt < CALL_ATTEMPTS_MAX:
                pause_s = RETRY_PAUSE_S_FIRST * 2 ** (attempt - 1)
                log(
                    f"{who.agency}: {label} got {err.code().name}; "
                    f"retrying in {pause_s:.1f}s with the same key"
                )
                time.sleep(pause_s)
                continue
            raise CheckError(f"{who.agency}: {label} failed: {describe(err)}") from err
    raise AssertionError("unreachable")


def expect_error(
    label: str, thunk: Callable[[], Any], code: grpc.StatusCode, reason: str = ""
) -> str:
    """Runs a call that must fail with `code` (and `reason`, if given); returns what was seen."""
    try:
        thunk()
    except grpc.RpcError as err:
        seen_reason, _ = error_details(err)
        if err.code() != code or (reason and seen_reason != reason):
            raise CheckError(
                f"{label}: expected {code.name} `{reason}`, got {describe(err)}"
            ) from err
        log(f"{label}: {describe(err)} (as expected)")
        return f"{code.name}/{seen_reason}" if seen_reason else code.name
    raise CheckError(f"{label}: expected {code.name}, but the call succeeded")


# --------------------------------------------------------------------------------------------
# 4. Tasks: stream from a cursor until the expected step arrives.
# --------------------------------------------------------------------------------------------


def wait_for_step(
    pb: Any, who: Caller, dossier_id: str, step_id: str, after: int, timeout_s: float
) -> tuple[Any, int]:
    """Streams `who`'s tasks after feed position `after` until step `step_id` of `dossier_id`
    is opened for it; returns the task and its position (the cursor to store once handled).

    A real agency system keeps one stream open, handles every task, and stores the position of
    each message it handled (tasks and `caught_up` markers alike) so it can resume after it.
    """
    request = pb.agency.StreamTasksRequest(after_position=after)
    stream = who.tasks.StreamTasks(request, metadata=who.metadata(), timeout=timeout_s)
    try:
        for message in stream:
            if message.WhichOneof("item") != "task":
                continue  # a caught-up marker: a safe cursor, but no work
            task = message.task
            if (
                task.kind == pb.agency.TASK_KIND_STEP_OPENED
                and task.dossier_id == dossier_id
                and task.step_id == step_id
            ):
                if task.agency != who.agency:
                    raise CheckError(f"{who.agency}: received a task for `{task.agency}`: {task}")
                return task, message.position
            # Tasks of other dossiers, deadline warnings ...: a real system handles them too.
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CheckError(
                f"{who.agency}: no `{step_id}` task for dossier {dossier_id} "
                f"within {timeout_s:.0f}s"
            ) from err
        raise CheckError(f"{who.agency}: StreamTasks failed: {describe(err)}") from err
    finally:
        stream.cancel()  # we have what we came for: close the stream
    raise CheckError(
        f"{who.agency}: the task stream ended before `{step_id}` of {dossier_id} arrived"
    )


def doc_ref(pb: Any, kind: str, content: bytes) -> Any:
    """A document by reference: where it lives, and the SHA-256 that pins its bytes."""
    digest = hashlib.sha256(content).hexdigest()
    return pb.events.DocumentRef(kind=kind, uri=f"urn:example:{kind}:{digest[:16]}", sha256=digest)


def work_step(
    pb: Any, who: Caller, dossier_id: str, step_id: str, after: int, timeout_s: float
) -> dict[str, Any]:
    """What an agency's worker does with one task: wait for it, do the work, complete the step.

    The idempotency key is derived from the task id, so a worker that crashes after completing
    and receives the same task again (it resumes before its cursor) sends the same key and gets
    the first answer back instead of an error.
    """
    task, position = wait_for_step(pb, who, dossier_id, step_id, after, timeout_s)
    log(
        f"{who.agency}: task {task.task_id} `{step_id}` at position {position}, "
        f"due {task.due.ToJsonString()}"
    )
    request = pb.agency.CompleteStepRequest(
        idempotency_key=f"complete/{task.task_id}",
        dossier=task.dossier_id,
        step_id=task.step_id,
        outcome="approve",
        results=[doc_ref(pb, f"{step_id}-result", f"{dossier_id}/{step_id}".encode())],
        note=f"done by the Python example as {who.agency}",
        officer=f"{who.agency}-officer-01",
    )
    answer = call(who, "CompleteStep", who.tasks.CompleteStep, request, timeout_s)
    kinds = [e.event.WhichOneof("body") for e in answer.events]
    if "step_completed" not in kinds:
        raise CheckError(
            f"{who.agency}: CompleteStep `{step_id}` appended {kinds}, no step_completed"
        )
    log(f"{who.agency}: completed `{step_id}` -> {kinds}")
    return {"agency": who.agency, "step": step_id, "task_id": task.task_id, "position": position}


# --------------------------------------------------------------------------------------------
# 5. The history: check the hash chain from the raw bytes.
# --------------------------------------------------------------------------------------------


def verify_chain(pb: Any, dossier_id: str, history: list[Any]) -> list[str]:
    """Checks what an auditor checks offline, and returns the event kinds in order.

    For each event: `hash == SHA-256(raw)`; `raw` decodes to an Event whose `seq` is 1, 2, 3 ...
    and whose `prev_hash` is the previous event's hash (32 zero bytes for the first). Because
    `prev_hash` is inside the hashed bytes, changing any event breaks every hash after it.
    """
    previous = ZERO_HASH
    kinds = []
    for seq, recorded in enumerate(history, start=1):
        raw, stored_hash = recorded.sealed.raw, recorded.sealed.hash
        if hashlib.sha256(raw).digest() != stored_hash:
            raise CheckError(f"history of {dossier_id}, seq {seq}: hash is not SHA-256(raw)")
        # Decode the hashed bytes ourselves: `recorded.event` is a convenience copy.
        event = pb.events.Event.FromString(raw)
        envelope = event.envelope
        if envelope.seq != seq:
            raise CheckError(f"history of {dossier_id}: event {seq} carries seq {envelope.seq}")
        if envelope.dossier_id != dossier_id:
            raise CheckError(
                f"history of {dossier_id}, seq {seq}: belongs to {envelope.dossier_id}"
            )
        if envelope.prev_hash != previous:
            raise CheckError(
                f"history of {dossier_id}, seq {seq}: prev_hash {envelope.prev_hash.hex()} "
                f"is not the previous event's hash {previous.hex()}"
            )
        if event != recorded.event:
            raise CheckError(
                f"history of {dossier_id}, seq {seq}: the decoded copy differs from raw"
            )
        kinds.append(event.WhichOneof("body"))
        previous = stored_hash
    return kinds


# --------------------------------------------------------------------------------------------
# The walk-through.
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, pb: Any, channel: grpc.Channel) -> dict[str, Any]:
    started = time.monotonic()
    timeout_s = args.timeout_s

    def caller(agency: str, token: str) -> Caller:
        return Caller(
            agency,
            token,
            pb.dossier_grpc.DossierServiceStub(channel),
            pb.agency_grpc.AgencyServiceStub(channel),
        )

    desk = caller("ubnd-xa", args.desk_token)
    tu_phap = caller("tu-phap", args.tu_phap_token)
    cong_an = caller("cong-an", args.cong_an_token)
    bhxh = caller("bhxh", args.bhxh_token)
    # Makes this run's idempotency keys unique, so the example can run again on the same server.
    run_id = args.run_id or uuid.uuid4().hex[:12]
    errors_seen = {}

    # -- No credentials: UNAUTHENTICATED, before anything else is looked at.
    errors_seen["no_token"] = expect_error(
        "Get without a token",
        lambda: desk.dossiers.Get(pb.dossier.GetDossierRequest(dossier="none"), timeout=timeout_s),
        grpc.StatusCode.UNAUTHENTICATED,
    )

    # -- The desk files the dossier. Attributes are typed and checked against the procedure's
    #    declared attributes (workflows/procedures/birth.toml): both required ones are given.
    birth_date = datetime.date.today() - datetime.timedelta(days=95)
    submit = pb.dossier.SubmitRequest(
        idempotency_key=f"py-example/{run_id}/submit",
        procedure_code=BIRTH_PROCEDURE,
        channel=pb.events.CHANNEL_IN_PERSON,
        applicant=pb.events.Applicant(
            full_name="Nguyễn Thị Mai", id_number="001190012345", phone="0912345678"
        ),
        attributes={
            "child.age_months": pb.events.AttributeValue(integer=3),
            "child.birth_date": pb.events.AttributeValue(date=birth_date.isoformat()),
        },
        documents=[
            doc_ref(pb, "to-khai-khai-sinh", b"declaration form (example)"),
            doc_ref(pb, "giay-chung-sinh", b"birth certificate from the hospital (example)"),
        ],
        officer="desk-officer-01",
    )
    first = call(desk, "Submit", desk.dossiers.Submit, submit, timeout_s)
    if first.replayed or not first.events:
        raise CheckError(
            f"Submit: a first submission must append events and not be replayed: {first}"
        )
    dossier_id, code = first.dossier_id, first.dossier_code
    log(
        f"desk: submitted {code} ({dossier_id}), {len(first.events)} events, "
        f"status {first.dossier.status_text}"
    )

    # -- A retry with the same key and the same request (as after a lost answer): the first
    #    answer comes back, marked `replayed`, and nothing new is recorded.
    again = call(desk, "Submit (retry)", desk.dossiers.Submit, submit, timeout_s)
    same_events = [e.sealed.hash for e in again.events] == [e.sealed.hash for e in first.events]
    if not again.replayed or again.dossier_id != dossier_id or not same_events:
        raise CheckError(
            f"Submit retry with the same key: expected the first answer replayed, got {again}"
        )
    log(
        f"desk: retry with the same key -> replayed={again.replayed}, "
        f"same dossier {again.dossier_code}"
    )

    # -- The same key with a different request: ALREADY_EXISTS, reason `idempotency-key-reused`.
    changed = pb.dossier.SubmitRequest()
    changed.CopyFrom(submit)
    changed.applicant.full_name = "Someone Else"
    errors_seen["key_reused"] = expect_error(
        "Submit with a reused key",
        lambda: desk.dossiers.Submit(changed, metadata=desk.metadata(), timeout=timeout_s),
        grpc.StatusCode.ALREADY_EXISTS,
        "idempotency-key-reused",
    )

    # -- Returning the result while steps are open: FAILED_PRECONDITION with a stable reason.
    early = pb.dossier.ReturnResultRequest(
        idempotency_key=f"py-example/{run_id}/return-too-early",
        dossier=dossier_id,
        channel=pb.events.CHANNEL_IN_PERSON,
        officer="desk-officer-01",
    )
    errors_seen["return_too_early"] = expect_error(
        "ReturnResult before the steps are done",
        lambda: desk.dossiers.ReturnResult(early, metadata=desk.metadata(), timeout=timeout_s),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not-processed",
    )

    # Every task of this dossier is on the global feed at or after its first event (the
    # submission itself opened `register-birth`), so each agency streams from just before it.
    # A real agency system streams from the cursor it stored last time instead.
    cursor = min(e.event.envelope.global_position for e in first.events) - 1

    # -- The police and social insurance start listening now, in parallel, before their steps
    #    exist: their tasks arrive live once the justice office has registered the birth.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="agency") as pool:
        parallel = [
            pool.submit(
                work_step, pb, cong_an, dossier_id, "register-residence", cursor, timeout_s
            ),
            pool.submit(work_step, pb, bhxh, dossier_id, "issue-health-card", cursor, timeout_s),
        ]

        # -- The justice office registers the birth.
        birth = work_step(pb, tu_phap, dossier_id, "register-birth", cursor, timeout_s)

        # -- Resume: a new stream after the stored cursor (the position of the handled task)
        #    must not deliver that task again. `backlog_only` ends the stream when caught up.
        redelivered = 0
        resumed = tu_phap.tasks.StreamTasks(
            pb.agency.StreamTasksRequest(after_position=birth["position"], backlog_only=True),
            metadata=tu_phap.metadata(),
            timeout=timeout_s,
        )
        try:
            for message in resumed:
                if (
                    message.WhichOneof("item") == "task"
                    and message.task.task_id == birth["task_id"]
                ):
                    redelivered += 1
        except grpc.RpcError as err:
            raise CheckError(f"tu-phap: resumed StreamTasks failed: {describe(err)}") from err
        if redelivered:
            raise CheckError(
                f"tu-phap: task {birth['task_id']} was delivered again after its cursor"
            )
        log(
            f"tu-phap: resumed after position {birth['position']}: "
            "the handled task was not repeated"
        )

        parallel_done = [f.result(timeout=timeout_s * 2) for f in parallel]

    # -- Both parallel steps are done: the desk's own step opens; it completes it and hands back.
    handed = work_step(pb, desk, dossier_id, "return-result", cursor, timeout_s)
    returned = call(
        desk,
        "ReturnResult",
        desk.dossiers.ReturnResult,
        pb.dossier.ReturnResultRequest(
            idempotency_key=f"py-example/{run_id}/return-result",
            dossier=dossier_id,
            results=[
                doc_ref(pb, "giay-khai-sinh", b"birth certificate (example)"),
                doc_ref(pb, "the-bhyt", b"health-insurance card (example)"),
            ],
            channel=pb.events.CHANNEL_IN_PERSON,
            officer="desk-officer-01",
        ),
        timeout_s,
    )
    log(f"desk: result returned -> {returned.dossier.status_text}")

    # -- The dossier as the server folds it now.
    dossier = call(
        desk, "Get", desk.dossiers.Get, pb.dossier.GetDossierRequest(dossier=code), timeout_s
    )
    status = pb.dossier.DossierStatus.Name(dossier.status)
    outcome = pb.events.Outcome.Name(dossier.outcome)
    if status != "DOSSIER_STATUS_CLOSED" or outcome != "OUTCOME_RESULT_RETURNED":
        raise CheckError(
            f"Get {code}: expected closed with the result returned, got {status} / {outcome}"
        )
    steps = {
        s.step_id: {"agency": s.agency, "status": pb.dossier.StepStatus.Name(s.status)}
        for s in dossier.steps
    }
    not_done = [k for k, v in steps.items() if v["status"] != "STEP_STATUS_COMPLETED"]
    if not_done:
        raise CheckError(f"Get {code}: steps not completed: {not_done} ({steps})")

    # -- The history, streamed, with its hash chain checked from the raw bytes.
    try:
        history = list(
            desk.dossiers.History(
                pb.dossier.HistoryRequest(dossier=dossier_id),
                metadata=desk.metadata(),
                timeout=timeout_s,
            )
        )
    except grpc.RpcError as err:
        raise CheckError(f"desk: History failed: {describe(err)}") from err
    kinds = verify_chain(pb, dossier_id, history)
    if len(history) != dossier.seq:
        raise CheckError(
            f"History of {code}: {len(history)} events, but the dossier is at seq {dossier.seq}"
        )
    for needed in ("received", "step_opened", "step_completed", "result_returned", "closed"):
        if needed not in kinds:
            raise CheckError(f"History of {code}: no `{needed}` event in {kinds}")
    if kinds[-1] != "closed":
        raise CheckError(f"History of {code}: the last event is `{kinds[-1]}`, not `closed`")
    log(f"desk: history of {code}: {len(history)} events, hash chain verified")

    return {
        "ok": True,
        "addr": args.addr,
        "dossier_id": dossier_id,
        "dossier_code": code,
        "procedure_code": dossier.procedure_code,
        "status": status,
        "status_text": dossier.status_text,
        "outcome": outcome,
        "events": len(history),
        "event_kinds": kinds,
        "chain_verified": True,
        "last_hash": history[-1].sealed.hash.hex(),
        "steps": steps,
        "completed_by": {d["step"]: d["agency"] for d in [birth, *parallel_done, handed]},
        "idempotent_replay": True,
        "resume_redelivered": redelivered,
        "errors_seen": errors_seen,
        "elapsed_ms": round((time.monotonic() - started) * 1000),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        description="Walk one birth-group dossier through a lienthong server over gRPC.",
        epilog="Tokens default to the development tokens of examples/auth.toml.",
    )
    p.add_argument(
        "--addr",
        default=env("LIENTHONG_ADDR", "127.0.0.1:50051"),
        help="server host:port (env LIENTHONG_ADDR)",
    )
    p.add_argument(
        "--desk-token",
        default=env("LIENTHONG_DESK_TOKEN", "dev-desk"),
        help="one-stop desk (ubnd-xa) token (env LIENTHONG_DESK_TOKEN)",
    )
    p.add_argument(
        "--tu-phap-token",
        default=env("LIENTHONG_TU_PHAP_TOKEN", "dev-tu-phap"),
        help="justice office token (env LIENTHONG_TU_PHAP_TOKEN)",
    )
    p.add_argument(
        "--cong-an-token",
        default=env("LIENTHONG_CONG_AN_TOKEN", "dev-cong-an"),
        help="police token (env LIENTHONG_CONG_AN_TOKEN)",
    )
    p.add_argument(
        "--bhxh-token",
        default=env("LIENTHONG_BHXH_TOKEN", "dev-bhxh"),
        help="social insurance token (env LIENTHONG_BHXH_TOKEN)",
    )
    p.add_argument(
        "--ca",
        type=Path,
        default=env("LIENTHONG_CA"),
        help="PEM CA of the server's TLS certificate: connect with TLS (env LIENTHONG_CA); "
        "default: plaintext, which the server accepts only on loopback",
    )
    p.add_argument(
        "--proto-dir",
        type=Path,
        default=PROTO_DIR_DEFAULT,
        help="the proto/ directory (default: the repository's)",
    )
    p.add_argument(
        "--stubs-dir",
        type=Path,
        help="write the generated stubs here and keep them (default: a temporary directory)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=30.0,
        help="deadline of each call and of each wait for a task, in seconds",
    )
    p.add_argument("--run-id", help="makes the idempotency keys of this run (default: random)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="lienthong-stubs-") as tmp:
            out = args.stubs_dir or Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            pb = generate_stubs(args.proto_dir.resolve(), out)
            if args.ca:
                credentials = grpc.ssl_channel_credentials(root_certificates=args.ca.read_bytes())
                channel = grpc.secure_channel(args.addr, credentials)
            else:
                channel = grpc.insecure_channel(args.addr)
            with channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=args.timeout_s)
                except grpc.FutureTimeoutError:
                    raise CheckError(
                        f"cannot reach lienthong at {args.addr} within {args.timeout_s:.0f}s: "
                        "is `lienthong serve` running there?"
                    ) from None
                summary = run(args, pb, channel)
    except CheckError as failure:
        log(f"FAILED: {failure}")
        return 1
    except Exception as unexpected:  # noqa: BLE001 (a bug or an unreadable file: say so, fail)
        traceback.print_exc()
        log(f"FAILED: unexpected {type(unexpected).__name__}: {unexpected}")
        return 1
    print(json.dumps(summary, ensure_ascii=False, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
