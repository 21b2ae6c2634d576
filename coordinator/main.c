/* kiln-coordinator: one per builder. Binds ROUTER sockets (ipc:// without
 * authentication, tcp:// with CurveZMQ and an allow-list), keeps the node
 * table, and runs build sessions. Single-threaded: every socket is polled
 * from this loop (the zauth actor runs ZAP on its own thread, as czmq
 * intends). */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build.h"
#include "cleanup.h"
#include "curve.h"
#include "err.h"
#include "log.h"
#include "nodes.h"
#include "proto.h"
#include "util.h"

#define MAX_LISTEN 8

struct coordinator {
	zsock_t *socks[MAX_LISTEN];
	size_t n_socks;
	struct nodes *nodes;
	struct builds *builds;
};

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"Usage: kiln-coordinator --listen ENDPOINT [--listen ENDPOINT]... [options]\n"
		"       kiln-coordinator --init DIR\n"
		"       kiln-coordinator --keys DIR --new-key NAME\n"
		"       kiln-coordinator --keys DIR --allow CERT\n"
		"\n"
		"Runs a kiln builder's coordinator, or manages its CurveZMQ keys.\n"
		"\n"
		"Options:\n"
		"  --listen EP              bind ipc://PATH or tcp://HOST:PORT (tcp needs --keys)\n"
		"  --keys DIR               key directory made by --init: server.cert(_secret), allowed/\n"
		"  --init DIR               create the coordinator key pair and an empty allow-list\n"
		"  --new-key NAME           make a client/worker key DIR/NAME.cert(_secret) and allow it\n"
		"  --allow CERT             add a public certificate to the allow-list\n"
		"  --heartbeat-timeout MS   drop nodes silent for this long (default: 5000)\n"
		"  --state DIR              state directory (default: none)\n"
		"  --pidfile FILE           write the process id here\n"
		"  -h, --help               show this help\n");
}

static void
reply_error(const struct peer *to, uint64_t id, int code, const char *msg)
{
	struct proto_writer w;

	proto_writer_init(&w, "error", id);
	proto_w_u64(&w, "code", (uint64_t) code);
	proto_w_str(&w, "msg", msg);
	(void) peer_send(to, &w);
	proto_writer_release(&w);
}

static void
on_gone(struct node *n, void *ctx)
{
	struct coordinator *c = ctx;

	builds_node_gone(c->builds, n);
}

static void
handle(struct coordinator *c, zsock_t *sock)
{
	zmsg_t *msg = zmsg_recv(sock);
	struct peer from = { .sock = sock };
	struct proto_msg *m = NULL;
	struct kiln_err err = { 0 };
	zframe_t *payload;
	struct node *n;
	const char *t;

	if (!msg)
		return;
	from.rid = zmsg_pop(msg);
	payload = zmsg_pop(msg);
	if (!from.rid || !payload || zmsg_size(msg) != 0 ||
	    proto_decode(zframe_data(payload), zframe_size(payload), &m, &err) < 0) {
		if (!err.code)
			kiln_err_set(&err, KILN_EPROTO, "message must be exactly one frame");
		log_debug("bad message: %s", err.msg);
		if (from.rid)
			reply_error(&from, 0, err.code, err.msg);
		goto out;
	}
	t = proto_msg_type(m);
	if (strcmp(t, "ping") == 0) {
		struct proto_writer w;

		proto_writer_init(&w, "pong", proto_msg_id(m));
		proto_w_u64(&w, "version", PROTO_VERSION);
		(void) peer_send(&from, &w);
		proto_writer_release(&w);
		builds_client_seen(c->builds, &from);
	} else if (strcmp(t, "nodes.list") == 0) {
		struct proto_writer w;

		proto_writer_init(&w, "nodes", proto_msg_id(m));
		nodes_pack(c->nodes, proto_w_key(&w, "nodes"), kiln_now_ms());
		(void) peer_send(&from, &w);
		proto_writer_release(&w);
	} else if (strcmp(t, "worker.register") == 0) {
		struct proto_writer w;

		if (nodes_register(c->nodes, &from, m, &n, &err) < 0) {
			reply_error(&from, proto_msg_id(m), err.code, err.msg);
			goto out;
		}
		log_info("node '%s' registered (capacity %u)", n->name, n->capacity);
		proto_writer_init(&w, "worker.ack", proto_msg_id(m));
		(void) peer_send(&from, &w);
		proto_writer_release(&w);
	} else if (strcmp(t, "worker.hb") == 0) {
		if (!nodes_heartbeat(c->nodes, &from, m)) {
			struct proto_writer w;

			proto_writer_init(&w, "worker.reregister", proto_msg_id(m));
			(void) peer_send(&from, &w);
			proto_writer_release(&w);
		}
	} else if ((n = nodes_by_peer(c->nodes, &from)) && n->status == NODE_READY) {
		n->last_seen_ms = kiln_now_ms();
		builds_on_node(c->builds, n, m, payload);
	} else {
		builds_on_client(c->builds, &from, m, payload);
	}
out:
	if (m && strcmp(proto_msg_type(m), "build.secrets") == 0) {
		/* secret values: leave no copy of them in freed memory */
		proto_msg_wipe(m);
		explicit_bzero(zframe_data(payload), zframe_size(payload));
	}
	proto_msg_free(m);
	zframe_destroy(&payload);
	peer_release(&from);
	zmsg_destroy(&msg);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "keys", required_argument, NULL, 'k' },
		{ "init", required_argument, NULL, 'i' },
		{ "new-key", required_argument, NULL, 'n' },
		{ "allow", required_argument, NULL, 'a' },
		{ "heartbeat-timeout", required_argument, NULL, 't' },
		{ "state", required_argument, NULL, 's' },
		{ "pidfile", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *listen[MAX_LISTEN], *keys = NULL, *init = NULL, *new_key = NULL, *allow = NULL;
	const char *state = NULL, *pidfile = NULL;
	size_t n_listen = 0;
	int64_t timeout_ms = 5000, next_check;
	struct coordinator c = { 0 };
	struct kiln_err err = { 0 };
	zactor_t *auth = NULL;
	zpoller_t *poller;
	int opt;

	kiln_log_init("kiln-coordinator");
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			if (n_listen == MAX_LISTEN) {
				log_error("at most %d --listen", MAX_LISTEN);
				return 2;
			}
			listen[n_listen++] = optarg;
			break;
		case 'k': keys = optarg; break;
		case 'i': init = optarg; break;
		case 'n': new_key = optarg; break;
		case 'a': allow = optarg; break;
		case 't': timeout_ms = strtoll(optarg, NULL, 10); break;
		case 's': state = optarg; break;
		case 'P': pidfile = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (init) {
		if (curve_init_dir(init, &err) < 0)
			return log_error_err(&err, "init '%s'", init), 1;
		printf("coordinator keys in %s (public certificate: %s/server.cert)\n", init, init);
		return 0;
	}
	if (new_key || allow) {
		if (!keys) {
			log_error("--new-key and --allow need --keys DIR");
			return 2;
		}
		if (new_key && curve_new_key(keys, new_key, &err) < 0)
			return log_error_err(&err, "new key '%s'", new_key), 1;
		if (allow && curve_allow(keys, allow, &err) < 0)
			return log_error_err(&err, "allow '%s'", allow), 1;
		if (new_key)
			printf("%s/%s.cert\n", keys, new_key);
		return 0;
	}
	if (n_listen == 0) {
		usage(stderr);
		return 2;
	}
	if (state && kiln_mkdir_p(state, 0700) < 0) {
		log_error("cannot create state directory '%s'", state);
		return 1;
	}
	zsys_handler_set(NULL);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < n_listen; i++) {
		zsock_t *s = zsock_new(ZMQ_ROUTER);
		bool tcp = kiln_startswith(listen[i], "tcp://");

		if (!s) {
			log_error("cannot create socket");
			return 1;
		}
		zsock_set_sndhwm(s, 0);
		zsock_set_rcvhwm(s, 0);
		zsock_set_router_mandatory(s, 0);
		/* libzmq would otherwise take a frame of any size off the wire
		 * before proto_decode could refuse it. */
		zsock_set_maxmsgsize(s, PROTO_FRAME_MAX + 1024);
		if (tcp) {
			if (!keys) {
				log_error("tcp:// endpoints need --keys DIR (CurveZMQ); run --init first");
				return 2;
			}
			if (!auth) {
				auth = curve_auth_start(keys, &err);
				if (!auth)
					return log_error_err(&err, "start authentication"), 1;
			}
			if (curve_server_apply(s, keys, &err) < 0)
				return log_error_err(&err, "curve"), 1;
		} else if (kiln_startswith(listen[i], "ipc://")) {
			(void) unlink(listen[i] + 6);
		}
		if (zsock_bind(s, "%s", listen[i]) < 0) {
			log_error("cannot bind '%s': %s", listen[i], zmq_strerror(zmq_errno()));
			return 1;
		}
		log_info("listening on %s%s", listen[i], tcp ? " (curve)" : "");
		c.socks[c.n_socks++] = s;
	}
	if (pidfile && kiln_write_pidfile(pidfile) < 0) {
		log_error("cannot write pidfile '%s'", pidfile);
		return 1;
	}
	c.nodes = nodes_new(timeout_ms);
	c.builds = builds_new(c.nodes, state);
	if (!c.nodes || !c.builds) {
		log_error("out of memory");
		return 1;
	}
	poller = zpoller_new(NULL);
	for (size_t i = 0; i < c.n_socks; i++)
		zpoller_add(poller, c.socks[i]);
	next_check = kiln_now_ms() + 250;
	while (!stop_requested) {
		int64_t now = kiln_now_ms();
		void *which = zpoller_wait(poller, (int) (next_check > now ? next_check - now : 0));

		if (which)
			handle(&c, which);
		else if (zpoller_terminated(poller))
			break;
		if (kiln_now_ms() >= next_check) {
			/* A long handler may have kept heartbeats waiting in the
			 * queue: read what is there before judging who is silent. */
			for (int k = 0; k < 10000 && (which = zpoller_wait(poller, 0)); k++)
				handle(&c, which);
			nodes_expire(c.nodes, kiln_now_ms(), on_gone, &c);
			builds_tick(c.builds, kiln_now_ms());
			next_check = kiln_now_ms() + 250;
		}
	}
	log_info("stopping");
	zpoller_destroy(&poller);
	builds_free(c.builds);
	nodes_free(c.nodes);
	for (size_t i = 0; i < c.n_socks; i++) {
		zsock_destroy(&c.socks[i]);
		if (kiln_startswith(listen[i], "ipc://"))
			(void) unlink(listen[i] + 6);
	}
	zactor_destroy(&auth);
	if (pidfile)
		(void) unlink(pidfile);
	return 0;
}
