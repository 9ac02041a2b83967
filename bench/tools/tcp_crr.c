/* tcp_crr: TCP connect/request/response rate, like netperf's TCP_CRR.
 *
 *   tcp_crr server PORT [TAG]        accept forever: read one byte, answer one byte, close
 *   tcp_crr client IP PORT SECS N    N threads, each: connect, send a byte, read the answer,
 *                                    close; prints the completed connections per second
 *
 * The server closes first, so TIME_WAIT stays on the server's side and the client never runs
 * out of ephemeral ports. Built static by bench/network.sh so it runs in any namespace.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in target;
static atomic_long done, failed;
static atomic_int stop;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *serve(void *arg) {
    int lfd = *(int *)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
            die("accept");
        }
        char b;
        if (read(fd, &b, 1) == 1) (void)!write(fd, &b, 1);
        close(fd);
    }
    return NULL;
}

static void *client(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        char b = 'x';
        /* Wait for the server's FIN before closing: the server closes first. */
        if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0 && write(fd, &b, 1) == 1 &&
            read(fd, &b, 1) == 1 && read(fd, &b, 1) == 0) {
            atomic_fetch_add(&done, 1);
        } else {
            atomic_fetch_add(&failed, 1);
        }
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "server") == 0) { /* more arguments: ignored (a tag) */
        int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (lfd < 0) die("socket");
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
        if (listen(lfd, 4096) < 0) die("listen");
        pthread_t t[2];
        for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, serve, &lfd);
        pthread_join(t[0], NULL);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "client") == 0) {
        target.sin_family = AF_INET;
        target.sin_port = htons(atoi(argv[3]));
        if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) {
            fprintf(stderr, "tcp_crr: bad address %s\n", argv[2]);
            return 2;
        }
        int secs = atoi(argv[4]), n = atoi(argv[5]);
        pthread_t *t = calloc(n, sizeof *t);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, client, NULL);
        sleep(secs);
        atomic_store(&stop, 1);
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        printf("%.0f\n", atomic_load(&done) / el);
        if (atomic_load(&failed) > atomic_load(&done) / 100) {
            fprintf(stderr, "tcp_crr: %ld of %ld connections failed\n", atomic_load(&failed),
                    atomic_load(&done) + atomic_load(&failed));
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "usage: tcp_crr server PORT | tcp_crr client IP PORT SECS THREADS\n");
    return 2;
}
