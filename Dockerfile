# Strata in a container: installs the package, regenerates Twisted's plugin cache (so the
# unprivileged runtime user never needs to write it), and runs `twistd -n strata` with the
# container configuration docker/strata.toml (all interfaces, unprivileged ports, data in the
# volume).  .dockerignore keeps a local strata-data/ (keys, mail) out of the build context.
#
#   docker build -t strata .
#   docker run -d --name strata -v strata-data:/var/lib/strata/strata-data \
#       -p 25:2525 -p 587:2587 -p 465:2465 -p 143:2143 -p 993:2993 strata
#   docker exec strata strata domain add example.com --relay mail.example.com
FROM python:3.11-slim

# The runtime user owns its data directory before it becomes a volume, so a new named volume
# starts out writable by that user (Docker copies the directory's owner and mode into it).
RUN useradd --system --home /var/lib/strata --create-home strata \
 && mkdir -p /var/lib/strata/strata-data \
 && chown strata:strata /var/lib/strata/strata-data \
 && chmod 0700 /var/lib/strata/strata-data
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir . \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && install -D -m 0644 docker/strata.toml /etc/strata/strata.toml \
 && ln -s /etc/strata/strata.toml /var/lib/strata/strata.toml \
 && rm -rf /src

USER strata
# twistd and the `strata` CLI (docker exec) both read ./strata.toml, the container configuration.
WORKDIR /var/lib/strata
# SMTP intake (publish as 25), submission with STARTTLS (587) and implicit TLS (465), IMAP with
# STARTTLS (143) and implicit TLS (993).
EXPOSE 2525 2587 2465 2143 2993
VOLUME ["/var/lib/strata/strata-data"]
CMD ["twistd", "-n", "--pidfile=", "strata"]
