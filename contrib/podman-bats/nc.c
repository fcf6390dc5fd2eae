/* Minimal stand-in for alpine busybox (nc_bloaty) nc: -l -n -v -p PORT [-e PROG] [-w N], client HOST PORT.
   Output of -v mimics busybox nc_bloaty: "listening on [::]:P ..." and "connect to [L]:P from [R]:RP ([R]:RP)". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <poll.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <netinet/in.h>
static void fmt(struct sockaddr_in6 *a, char *buf, size_t n) {
  char ip[INET6_ADDRSTRLEN]; inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
  snprintf(buf, n, "[%s]:%d", ip, ntohs(a->sin6_port));
}
static void pump(int s) {
  struct pollfd p[2] = {{0, POLLIN, 0}, {s, POLLIN, 0}}; char b[8192]; int in_open = 1;
  for (;;) {
    if (poll(p, 2, -1) < 0) return;
    if (in_open && (p[0].revents & (POLLIN|POLLHUP))) {
      ssize_t r = read(0, b, sizeof b);
      if (r <= 0) { in_open = 0; p[0].fd = -1; shutdown(s, SHUT_WR); } else write(s, b, r);
    }
    if (p[1].revents & (POLLIN|POLLHUP|POLLERR)) {
      ssize_t r = read(s, b, sizeof b);
      if (r <= 0) return; write(1, b, r);
    }
  }
}
int main(int argc, char **argv) {
  int listen_mode = 0, verbose = 0, port = 0, c; char *prog = NULL;
  while ((c = getopt(argc, argv, "lnvp:e:w:i:")) != -1) switch (c) {
    case 'l': listen_mode = 1; break; case 'v': verbose = 1; break; case 'n': break;
    case 'p': port = atoi(optarg); break; case 'e': prog = optarg; break;
    case 'w': case 'i': break; default: return 1; }
  int s;
  if (listen_mode) {
    s = socket(AF_INET6, SOCK_STREAM, 0); int one = 1, zero = 0;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 a = {0}; a.sin6_family = AF_INET6; a.sin6_port = htons(port); a.sin6_addr = in6addr_any;
    if (bind(s, (void *)&a, sizeof a) || listen(s, 1)) { perror("nc: bind"); return 1; }
    char buf[128];
    if (verbose) { socklen_t l = sizeof a; getsockname(s, (void *)&a, &l); fmt(&a, buf, sizeof buf); fprintf(stderr, "listening on %s ...\n", buf); }
    struct sockaddr_in6 r; socklen_t rl = sizeof r; int cs = accept(s, (void *)&r, &rl);
    if (cs < 0) { perror("nc: accept"); return 1; }
    if (verbose) { struct sockaddr_in6 l6; socklen_t ll = sizeof l6; char lb[128];
      getsockname(cs, (void *)&l6, &ll); fmt(&l6, lb, sizeof lb); fmt(&r, buf, sizeof buf);
      fprintf(stderr, "connect to %s from %s (%s)\n", lb, buf, buf); }
    close(s); s = cs;
  } else {
    if (optind + 2 > argc) { fprintf(stderr, "usage: nc [-l] [-n] [-v] [-p PORT] [-e PROG] [HOST PORT]\n"); return 1; }
    struct addrinfo h = {0}, *res; h.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(argv[optind], argv[optind + 1], &h, &res)) { fprintf(stderr, "nc: bad address\n"); return 1; }
    s = socket(res->ai_family, SOCK_STREAM, 0);
    if (connect(s, res->ai_addr, res->ai_addrlen)) { perror("nc: connect"); return 1; }
  }
  if (prog) { dup2(s, 0); dup2(s, 1); close(s); execl(prog, prog, (char *)NULL); perror("nc: exec"); return 1; }
  pump(s); return 0;
}
