# SHELL changes how shell forms of RUN, CMD and ENTRYPOINT run.
FROM base
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN echo one | tee /one
CMD echo done
RUN ["/bin/echo", "exec form ignores SHELL"]
