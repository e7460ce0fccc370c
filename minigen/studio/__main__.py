"""python -m minigen.studio --ckpt runs/ddpm/last.pt [--ckpt runs/t2i/last.pt ...]

Serves a page on http://127.0.0.1:8765 (--host, --port) to draw samples from the checkpoints
(a class, or a prompt when the model has text), watch x_t and x̂_0 as the reverse process runs,
and edit an uploaded or test image: paint a mask, then inpaint, SDEdit or invert and re-sample.
Ctrl-C stops it. Only this machine can reach it unless --host says otherwise.
"""

import argparse
import sys

from ..cli import Parser, between, number, run
from ..device import pick_device
from ..errors import MinigenError
from .server import Studio, StudioServer


def main(argv=None) -> int:
    parser = Parser(prog="python -m minigen.studio", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", action="append", required=True,
                        help="a diffusion checkpoint to serve (repeat for several; the page lists them)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=number(int, between(0, 65535)), default=8765,
                        help="port (default: 8765; 0 picks a free one)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best there is)")
    parser.add_argument("--queue", type=number(int, between(0, 1000)), default=4,
                        help="jobs that may wait per model, besides the one running (default: 4)")
    parser.add_argument("--verbose", action="store_true", help="print every request")
    args = parser.parse_args(argv)
    device, reason = pick_device(args.device)
    print(f"device: {reason}")
    studio = Studio(args.ckpt, device, queue=args.queue)
    try:
        server = StudioServer(studio, args.host, args.port, args.verbose)
    except OSError as e:
        raise MinigenError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    for m in studio.models:
        d = m.describe(0)
        print(f"serving {m.name}: {'x'.join(map(str, d['image_shape']))} images, condition: {d['condition']}")
    host, port = server.server_address[:2]
    print(f"the studio is at http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        ended = server.stop()                   # running jobs stop at their next frame
        print("stopped" + ("" if ended else "; a job was still running and is abandoned"))
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
