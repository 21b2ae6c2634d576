/* Corpus replay for the fuzz targets: a main() that feeds every file of
 * the directories (or files) named on the command line to
 * LLVMFuzzerTestOneInput, in sorted order, and prints "N inputs
 * replayed". Linked with one fuzz_<parser>.o in the replay build (make
 * test); the libFuzzer build (make fuzz) leaves it out and gets its main()
 * from libFuzzer. A target signals a bug by crashing or aborting; this
 * file knows nothing about any particular target. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_INPUT_MAX (64u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read the whole file (at most REPLAY_INPUT_MAX bytes) into a buffer of
 * exactly its size, so that a target reading past the end trips ASan. */
static int
replay_file(const char *path)
{
	struct stat st;
	uint8_t *buf;
	size_t off = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size > REPLAY_INPUT_MAX) {
		close(fd);
		return 0;
	}
	buf = malloc(st.st_size ? (size_t) st.st_size : 1);
	if (!buf) {
		close(fd);
		return -1;
	}
	while (off < (size_t) st.st_size) {
		ssize_t n = read(fd, buf + off, (size_t) st.st_size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t) n;
	}
	close(fd);
	(void) LLVMFuzzerTestOneInput(buf, off);
	free(buf);
	return 1;
}

int
main(int argc, char **argv)
{
	unsigned long replayed = 0;
	int status = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct dirent **names;
		struct stat st;
		int n;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			status = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			n = replay_file(argv[i]);
			if (n < 0)
				status = 1;
			else
				replayed += (unsigned long) n;
			continue;
		}
		n = scandir(argv[i], &names, NULL, alphasort);
		if (n < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			status = 1;
			continue;
		}
		for (int j = 0; j < n; j++) {
			char path[4096];
			int r;

			if (names[j]->d_name[0] != '.') {
				snprintf(path, sizeof(path), "%s/%s", argv[i], names[j]->d_name);
				r = replay_file(path);
				if (r < 0)
					status = 1;
				else
					replayed += (unsigned long) r;
			}
			free(names[j]);
		}
		free(names);
	}
	printf("%lu inputs replayed\n", replayed);
	return status;
}
