"""A TF Serving REST client (standard library and numpy, no TensorFlow) and its command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from serving import rest_json

# Gateway answers that mean "not now" (a server starting, a proxy without a backend): worth
# another try. Any other status (400 a bad request, 404 no such model) would fail the same way again.
RETRY_STATUSES = frozenset({502, 503, 504})


class ServingError(RuntimeError):
    """A request the server refused, or one that got no answer after the retries.

    Attributes:
      status: the HTTP status, or None when no response came.
      url: the request's URL.
      server_message: the server's error text verbatim (its `{"error": ...}`,
        else the response body), or the transport error's.
    """

    def __init__(self, message: str, *, status: Optional[int], url: str, server_message: str):
        super().__init__(message)
        self.status = status
        self.url = url
        self.server_message = server_message


class ServingTimeoutError(ServingError, TimeoutError):
    """No response within the timeout, on every try."""


class ServingClient:
    """Calls one model of a TF Serving REST endpoint.

    `predict` is a pure function of its inputs, so every call is safe to repeat:
    connection errors, timeouts and HTTP 502/503/504 are retried with
    exponential backoff (`backoff`, `2 * backoff`, ...); a 4xx never is.

    Args:
      url: the server's REST address, e.g. "http://localhost:8501".
      model: the model's name in the server's config.
      version: a version to ask for (the server's latest when None and no label).
      label: a version label (e.g. "stable") instead of a version.
      timeout: seconds each HTTP request may take.
      retries: tries after the first, on the errors above.
      backoff: seconds before the first retry; doubled for each next one.

    Raises:
      ValueError: both a version and a label, a URL that is not http(s), or a
        non-positive timeout or negative retries/backoff, naming the value.
    """

    def __init__(
        self,
        url: str,
        model: str,
        version: Optional[int | str] = None,
        label: Optional[str] = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"url {url!r} is not an http(s) address like 'http://localhost:8501'.")
        if not model:
            raise ValueError("model must name the served model; got an empty name.")
        if version is not None and label is not None:
            raise ValueError(f"Give a version ({version!r}) or a label ({label!r}), not both.")
        if version is not None and not str(version).isdigit():
            raise ValueError(f"version {version!r} is not a non-negative integer; TF Serving's versions are.")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds; got {timeout}.")
        if retries < 0 or backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0; got retries={retries}, backoff={backoff}.")
        self.url = url.rstrip("/")
        self.model = model
        self.version = None if version is None else str(version)
        self.label = label
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    @property
    def model_url(self) -> str:
        """`<url>/v1/models/<model>[/versions/<v>|/labels/<l>]`."""
        path = f"{self.url}/v1/models/{urllib.parse.quote(self.model, safe='')}"
        if self.version is not None:
            return f"{path}/versions/{self.version}"
        if self.label is not None:
            return f"{path}/labels/{urllib.parse.quote(self.label, safe='')}"
        return path

    def predict(
        self,
        inputs: Mapping[str, rest_json.Value],
        signature_name: Optional[str] = None,
        form: str = "columnar",
        output_name: Optional[str] = None,
    ) -> dict[str, np.ndarray]:
        """Runs a signature on `inputs` (`POST ...:predict`).

        Args:
          inputs: input name -> value (see `rest_json.encode_request`).
          signature_name: the signature; the server's `serving_default` when None.
          form: "columnar" or "row" (see `rest_json.encode_request`).
          output_name: the name to give a signature's single output, which
            TF Serving's response leaves out (see `rest_json.decode_response`).

        Returns:
          Dict output name -> numpy array.

        Raises:
          ValueError: inputs the form can't send (see `rest_json.encode_request`).
          ServingError: the server refused the request (its message verbatim),
            or no response came after the retries (`ServingTimeoutError` on
            timeouts).
        """
        body = rest_json.encode_request(inputs, signature_name=signature_name, form=form)
        url = f"{self.model_url}:predict"
        response = self._call("POST", url, body)
        try:
            return rest_json.decode_response(response, form, output_name=output_name)
        except rest_json.ServingJSONError as err:
            # An error body under HTTP 200: still the server's refusal, reported like any other.
            raise ServingError(f"POST {url} -> HTTP 200: {err}", status=200, url=url, server_message=str(err)) from None

    def status(self) -> dict[str, Any]:
        """The model's version status (`GET /v1/models/<model>[/versions/<v>]`), as the server's JSON."""
        return self._call("GET", self.model_url)

    def metadata(self) -> dict[str, Any]:
        """The model's metadata, signature defs included (`GET .../metadata`), as the server's JSON."""
        return self._call("GET", f"{self.model_url}/metadata")

    def _call(self, method: str, url: str, body: Optional[Mapping[str, Any]] = None) -> Any:
        """One request with the retries; returns the parsed JSON response."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                # Before URLError: an HTTPError is one, but it carries the server's answer.
                text = _error_text(err)
                if err.code not in RETRY_STATUSES or last:
                    raise ServingError(
                        f"{method} {url} -> HTTP {err.code}: {text}", status=err.code, url=url, server_message=text
                    ) from None
                reason = f"HTTP {err.code}: {text}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                # urlopen wraps a connect timeout in URLError; a read timeout comes bare.
                cause = err.reason if isinstance(err, urllib.error.URLError) else err
                timed_out = isinstance(cause, (TimeoutError, socket.timeout))
                if last:
                    kind = ServingTimeoutError if timed_out else ServingError
                    what = f"no response within {self.timeout}s" if timed_out else f"no connection ({cause})"
                    raise kind(
                        f"{method} {url} -> {what}, after {self.retries + 1} tries.",
                        status=None,
                        url=url,
                        server_message=str(cause),
                    ) from err
                reason = f"timed out after {self.timeout}s" if timed_out else str(cause)
            delay = self.backoff * 2**attempt
            logging.warning("%s %s: %s; retry %d/%d in %.2fs", method, url, reason, attempt + 1, self.retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable: the last try returns or raises")


def _error_text(err: urllib.error.HTTPError) -> str:
    """The server's error message: its `{"error": ...}` verbatim, else the body as text."""
    try:
        raw = err.read().decode("utf-8", errors="replace")
    except OSError:
        return err.reason or ""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.strip() or str(err.reason)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return raw.strip()


# --- command line ---------------------------------------------------------------------


def _parse_input(text: str) -> tuple[str, Any]:
    """`NAME=PATH.npy` or `NAME=JSON` as (name, value); raises argparse.ArgumentTypeError naming the problem."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATH.npy or NAME=JSON")
    if value.endswith(".npy"):
        if not os.path.isfile(value):
            raise argparse.ArgumentTypeError(f"{text!r}: no file {value!r}")
        try:
            return name, np.load(value, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise argparse.ArgumentTypeError(f"{text!r}: can't read {value!r} as .npy ({err})") from None
    try:
        parsed = json.loads(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is neither a .npy path nor JSON ({err})") from None
    # Through TF Serving's own JSON rules, so that {"b64": ...} means bytes here as on the server.
    return name, rest_json.from_json_value(parsed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.client", description="Query a model on a TF Serving REST endpoint; prints JSON."
    )
    parser.add_argument("--url", required=True, help="the server's REST address, e.g. http://localhost:8501")
    parser.add_argument("--model", required=True, help="the model's name on the server")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a model version (the latest when left out)")
    which.add_argument("--label", help="a version label instead of a version")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    parser.add_argument("--retries", type=int, default=3, help="retries on connection errors, timeouts, 502/503/504")
    parser.add_argument("command", choices=("status", "metadata", "predict"))
    parser.add_argument("--signature", help="predict: the signature (the server's serving_default when left out)")
    parser.add_argument("--form", choices=rest_json.FORMS, default="columnar", help="predict: the request's form")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        type=_parse_input,
        metavar="NAME=PATH.npy|NAME=JSON",
        help="predict: an input, repeated for each",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns 0, or 1 on a server error (printed verbatim). Bad arguments exit 2.

    Args:
      argv: the arguments (`sys.argv[1:]` when None).

    Returns:
      The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "predict" and not args.input:
        parser.error("argument --input: predict needs at least one --input NAME=PATH.npy|NAME=JSON")
    if args.command != "predict" and (args.input or args.signature):
        parser.error(f"argument --input/--signature: only predict takes inputs, not {args.command}")
    names = [name for name, _ in args.input]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        parser.error(f"argument --input: input(s) {repeated} given more than once")
    try:
        client = ServingClient(
            args.url, args.model, version=args.version, label=args.label, timeout=args.timeout, retries=args.retries
        )
    except ValueError as err:
        parser.error(str(err))
    try:
        if args.command == "status":
            result = client.status()
        elif args.command == "metadata":
            result = client.metadata()
        else:
            inputs = dict(args.input)
            try:
                # Checked here, before any request: what the form can't send is a bad argument.
                rest_json.encode_request(inputs, signature_name=args.signature, form=args.form)
            except (ValueError, TypeError) as err:
                parser.error(f"argument --input: {err}")
            outputs = client.predict(inputs, signature_name=args.signature, form=args.form)
            result = {name: rest_json.to_json_value(value) for name, value in outputs.items()}
    except ServingError as err:
        print(err, file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
