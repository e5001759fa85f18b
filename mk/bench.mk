# `make bench` (issue 14): Debian's nginx with the echo module is the SendGrid-shaped sink
# that is never the bottleneck (bench/nginx_sink.py). Not part of `make test` or CI.
# Idempotent: apt-get runs only when nginx or the echo module is missing.
NGINX_ECHO_MODULE := /usr/lib/nginx/modules/ngx_http_echo_module.so

.PHONY: bench-sink

bench-sink:
	@if ! command -v nginx >/dev/null || [ ! -f $(NGINX_ECHO_MODULE) ]; then \
	  command -v apt-get >/dev/null || { echo "nginx-light and libnginx-mod-http-echo are needed (Debian)" >&2; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q nginx-light libnginx-mod-http-echo; \
	fi

bench: bench-sink
