// connprobe: the benchmark's programming-latency prober (src/bench/loadgen.ts starts it inside
// the client pod's namespace). It tries a TCP connection to each probed address every
// INTERVAL_MS until one is answered, and says when: the moment a Service became reachable.
//
// Why not in the loadgen agent's JavaScript: a burst of 50 Services probed every 5 ms is ten
// connection attempts per millisecond, most of them to an address the proxy does not translate
// yet (the SYN is dropped). Each attempt through node:net cost ~35 µs of JavaScript on top of
// ~20 µs of kernel work, about half a core during a burst, taken from the proxy and the API
// server it measures on a two-core machine. Here an attempt is the kernel's work only.
//
// stdin, one command per line:
//   probe ID ADDR PORT DEADLINE_MS INTERVAL_MS ATTEMPT_MS
// stdout, one line per probe, in the order they end:
//   ID ok EPOCH_MS ATTEMPTS       an attempt connected, sent "q\n" and read a reply starting "o"
//   ID fail REASON ATTEMPTS       no attempt answered before the deadline
// An attempt not connected after ATTEMPT_MS is given up (its SYN was dropped; the kernel would
// retransmit only after 1 s). One that connected waits up to 2 s for the answer, and while it
// does its probe starts no new attempts: the Service is reachable, and more connections would
// only load the server that is to answer. (Given up after ATTEMPT_MS too, a server answering
// more slowly than that — a busy one — could never be seen to answer, and each new attempt added
// to its backlog: the suspected cause of the burst stalls in docs/bench.md.) Exits when stdin
// closes. Dials only the addresses it is given.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_ID 64
#define REPLY_US 2000000

struct probe {
  char id[MAX_ID];
  struct sockaddr_storage addr;
  socklen_t addrlen;
  int64_t deadline_us, interval_us, attempt_us, next_us;
  int attempts, open, done;
  int connected;  // attempts connected and waiting for the answer
};

struct attempt {
  int fd;
  int probe;  // index into probes; -1 when the slot is free
  int sent;
  int64_t end_us;  // given up at
};

static struct probe *probes;
static size_t nprobes, capprobes;
static struct attempt *attempts;
static size_t nattempts, capattempts;
static int ep, tfd;

static int64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double epoch_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void *grow(void *p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return p;
  size_t n = *cap ? *cap * 2 : 64;
  while (n < need) n *= 2;
  void *q = realloc(p, n * size);
  if (!q) {
    perror("connprobe: realloc");
    exit(1);
  }
  *cap = n;
  return q;
}

static void close_attempt(size_t i) {
  struct attempt *a = &attempts[i];
  if (a->probe < 0) return;
  epoll_ctl(ep, EPOLL_CTL_DEL, a->fd, NULL);
  close(a->fd);
  probes[a->probe].open--;
  if (a->sent) probes[a->probe].connected--;
  a->probe = -1;
}

static void finish(int p, const char *line) {
  struct probe *pr = &probes[p];
  pr->done = 1;
  for (size_t i = 0; i < nattempts; i++)
    if (attempts[i].probe == p) close_attempt(i);
  fputs(line, stdout);
  fflush(stdout);
}

static void start_attempt(int p, int64_t now) {
  struct probe *pr = &probes[p];
  int fd = socket(pr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  pr->attempts++;
  if (fd < 0) return;  // out of descriptors for a moment: the next tick tries again
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(fd, (struct sockaddr *)&pr->addr, pr->addrlen) < 0 && errno != EINPROGRESS) {
    close(fd);
    return;
  }
  size_t i;
  for (i = 0; i < nattempts; i++)
    if (attempts[i].probe < 0) break;
  if (i == nattempts) {
    attempts = grow(attempts, &capattempts, nattempts + 1, sizeof(*attempts));
    nattempts++;
  }
  attempts[i] = (struct attempt){.fd = fd, .probe = p, .sent = 0, .end_us = now + pr->attempt_us};
  struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = i + 1};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    close(fd);
    attempts[i].probe = -1;
    return;
  }
  pr->open++;
}

static void on_attempt(size_t i, uint32_t events) {
  struct attempt *a = &attempts[i];
  if (a->probe < 0) return;
  int p = a->probe;
  if (!a->sent) {
    int err = 0;
    socklen_t len = sizeof(err);
    if ((events & (EPOLLERR | EPOLLHUP)) || getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
      close_attempt(i);
      return;
    }
    if (!(events & EPOLLOUT)) return;
    if (write(a->fd, "q\n", 2) != 2) {
      close_attempt(i);
      return;
    }
    a->sent = 1;
    a->end_us = mono_us() + REPLY_US;
    probes[p].connected++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i + 1};
    epoll_ctl(ep, EPOLL_CTL_MOD, a->fd, &ev);
    return;
  }
  char buf[16];
  ssize_t n = read(a->fd, buf, sizeof(buf));
  if (n > 0 && buf[0] == 'o' && !probes[p].done) {
    char line[MAX_ID + 64];
    snprintf(line, sizeof(line), "%s ok %.3f %d\n", probes[p].id, epoch_ms(), probes[p].attempts);
    finish(p, line);
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  close_attempt(i);
}

// probe ID ADDR PORT DEADLINE_MS INTERVAL_MS ATTEMPT_MS
static void command(char *line, int64_t now) {
  char id[MAX_ID], addr[64];
  unsigned port;
  long deadline, interval, attempt;
  if (sscanf(line, "probe %63s %63s %u %ld %ld %ld", id, addr, &port, &deadline, &interval, &attempt) != 6 || port == 0 || port > 65535 ||
      interval < 1 || attempt < 1) {
    fputs("? fail bad_command 0\n", stdout);
    fflush(stdout);
    return;
  }
  probes = grow(probes, &capprobes, nprobes + 1, sizeof(*probes));
  struct probe *pr = &probes[nprobes];
  memset(pr, 0, sizeof(*pr));
  strcpy(pr->id, id);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&pr->addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&pr->addr;
  if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    pr->addrlen = sizeof(*v4);
  } else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    pr->addrlen = sizeof(*v6);
  } else {
    fprintf(stdout, "%s fail bad_address 0\n", id);
    fflush(stdout);
    return;
  }
  pr->deadline_us = now + deadline * 1000;
  pr->interval_us = interval * 1000;
  pr->attempt_us = attempt * 1000;
  pr->next_us = now;
  nprobes++;
}

// Starts due attempts, gives up old ones and expired probes; returns the next time to wake (µs).
static int64_t tick(int64_t now) {
  int64_t next = now + 1000000;
  for (size_t i = 0; i < nattempts; i++) {
    struct attempt *a = &attempts[i];
    if (a->probe < 0) continue;
    if (now >= a->end_us) close_attempt(i);
    else if (a->end_us < next) next = a->end_us;
  }
  for (size_t p = 0; p < nprobes; p++) {
    struct probe *pr = &probes[p];
    if (pr->done) continue;
    if (now >= pr->deadline_us) {
      char line[MAX_ID + 64];
      snprintf(line, sizeof(line), "%s fail deadline %d\n", pr->id, pr->attempts);
      finish((int)p, line);
      continue;
    }
    if (now >= pr->next_us) {
      if (pr->connected == 0) start_attempt((int)p, now);
      // A late wake-up starts one attempt, not a catch-up burst.
      pr->next_us = pr->next_us + pr->interval_us > now ? pr->next_us + pr->interval_us : now + pr->interval_us;
    }
    if (pr->next_us < next) next = pr->next_us;
    if (pr->deadline_us < next) next = pr->deadline_us;
  }
  // Forget finished probes once none is running (between bursts), so the table stays small.
  int running = 0;
  for (size_t p = 0; p < nprobes; p++) running |= !probes[p].done;
  if (!running) nprobes = 0;
  return next;
}

static void arm(int64_t at_us) {
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  its.it_value.tv_sec = at_us / 1000000;
  its.it_value.tv_nsec = (at_us % 1000000) * 1000;
  if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

int main(void) {
  ep = epoll_create1(EPOLL_CLOEXEC);
  tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep < 0 || tfd < 0) {
    perror("connprobe: epoll/timerfd");
    return 1;
  }
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  struct epoll_event tev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
  char in[8192];
  size_t inlen = 0;
  for (;;) {
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR) {
      perror("connprobe: epoll_wait");
      return 1;
    }
    int64_t now = mono_us();
    for (int k = 0; k < n; k++) {
      uint64_t d = evs[k].data.u64;
      if (d == UINT64_MAX) {
        uint64_t x;
        while (read(tfd, &x, sizeof(x)) > 0) {
        }
      } else if (d == 0) {
        for (;;) {
          ssize_t r = read(0, in + inlen, sizeof(in) - 1 - inlen);
          if (r == 0) return 0;  // the agent is gone
          if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return 0;
          }
          inlen += (size_t)r;
          char *start = in, *nl;
          while ((nl = memchr(start, '\n', inlen - (size_t)(start - in)))) {
            *nl = '\0';
            command(start, now);
            start = nl + 1;
          }
          inlen -= (size_t)(start - in);
          memmove(in, start, inlen);
          if (inlen == sizeof(in) - 1) inlen = 0;  // an overlong line: dropped
        }
      } else {
        on_attempt((size_t)(d - 1), evs[k].events);
      }
    }
    arm(tick(mono_us()));
  }
}
