"""A real OTLP trace receiver in its own process: ``python tests/support/otlp_receiver.py HTTP GRPC [count]``.

It accepts what an OpenTelemetry collector accepts for traces: ``POST /v1/traces`` with a protobuf
``ExportTraceServiceRequest`` (OTLP/HTTP) and the gRPC ``TraceService/Export`` call (OTLP/gRPC). Each
span is decoded from the protobuf and kept as a plain JSON object (ids in hex, attribute and resource
values unwrapped, events, the protocol it came by); ``GET /spans`` returns them all, ``GET /health``
answers once both listeners are up. The tests read what the gateway really put on the wire. With
``count`` (bench/run.sh) it decodes every request but keeps only the number of spans (``GET /count``).
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

SPANS: list[dict[str, Any]] = []
COUNTED = [0]  # spans received in count mode
COUNT_ONLY = len(sys.argv) > 3 and sys.argv[3] == "count"
LOCK = threading.Lock()


def _value(any_value) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(items) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


def record(request: trace_service_pb2.ExportTraceServiceRequest, protocol: str) -> None:
    if COUNT_ONLY:
        with LOCK:
            COUNTED[0] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "protocol": protocol,
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "trace_state": span.trace_state,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": _attributes(span.attributes),
                        "events": [{"name": e.name, "attributes": _attributes(e.attributes)} for e in span.events],
                        "status_code": span.status.code,
                    }
                )
    with LOCK:
        SPANS.extend(spans)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_response(404 if self.path != "/v1/traces" else 415)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        record(request, "http/protobuf")
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        with LOCK:
            answers = {"/spans": SPANS, "/count": COUNTED[0]}
            body = json.dumps(answers.get(self.path, {"ok": True})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet: the test reads /spans, not an access log
        pass


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # the gRPC method's name
        record(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    http_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    ThreadingHTTPServer(("127.0.0.1", http_port), Handler).serve_forever()


if __name__ == "__main__":
    main()
