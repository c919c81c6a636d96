# Strata in a container: installs the package, regenerates Twisted's plugin cache (so a non-root
# runtime never needs to write it), and runs `twistd -n strata`.
FROM python:3.11-slim

RUN useradd --system --home /var/lib/strata --create-home strata
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir . \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && rm -rf /src

USER strata
WORKDIR /var/lib/strata
# Mount a strata.toml at /var/lib/strata/strata.toml (listen on 0.0.0.0:25 etc.) and a volume for
# /var/lib/strata/strata-data.  Ports: 25 intake (2525 on the embedded default).
EXPOSE 2525 25
VOLUME ["/var/lib/strata/strata-data"]
CMD ["twistd", "-n", "--pidfile=", "strata"]
