# One image, every role: the compose file picks the role with the command.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p hubkeeper

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 hubkeeper
COPY --from=build /src/target/release/hubkeeper /usr/local/bin/hubkeeper
USER hubkeeper
ENV HK_BIND=0.0.0.0:8080 HK_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["hubkeeper"]
CMD ["api"]
