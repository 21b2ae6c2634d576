# Ten steps or more: progress names pad the step number.
FROM base
RUN echo 1
RUN echo 2
RUN echo 3
RUN echo 4
RUN echo 5
RUN echo 6
RUN echo 7
RUN echo 8
RUN echo 9
RUN echo 10
