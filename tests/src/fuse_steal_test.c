// SPDX-License-Identifier: GPL-2.0
/*
 * A pending guest_memfd folio must not be stolen through a pipe.
 *
 * A shared page of a guest_memfd (KVM_X86_SW_PROTECTED_VM, mmap()ed by the
 * host) is gifted to a pipe with vmsplice(SPLICE_F_GIFT), then converted to
 * private with KVM_SET_MEMORY_ATTRIBUTES2_DEFER. The pipe buffer still holds
 * the folio, so the conversion leaves it pending: out of guest_memfd's page
 * cache, tagged for guest_memfd (PGTY_owned, which aliases _mapcount), with
 * the pipe buffer as its only reference. generic_pipe_buf_try_steal() gives
 * away any page whose count is one, and FUSE asks it to: a raw FUSE server
 * here answers the READ that fills its page cache by splicing the gifted
 * buffer into /dev/fuse with SPLICE_F_MOVE, and fuse_try_move_page() then
 * steals it and puts it in FUSE's page cache with replace_page_cache_folio().
 *
 * The pipe must refuse to give an owned folio away: FUSE then copies it, the
 * folio's last reference drops with the pipe buffer, the conversion
 * completes (kvm/gmem_completed_folios grows by one), and the page is
 * private and, once converted back, holds what the host wrote. Two variants
 * show what goes wrong where it is given away:
 *
 *  - written_page0: the host wrote a pattern to page 0, so the folio is
 *    dirty (noop_dirty_folio() sets PG_dirty, and nothing clears it on a
 *    guest_memfd folio). The pipe lets FUSE steal it; FUSE clears
 *    PG_uptodate, then finds it dirty (fuse_check_folio(): "trying to steal
 *    weird page") and copies it after all. guest_memfd gets back a folio
 *    that is not uptodate, which its next fault clears: the pattern is gone
 *    once the page is shared again.
 *  - clean_page1: page 1 was only read (it holds zeros), so the folio is
 *    clean and FUSE keeps it in its page cache, at FUSE's index 0: the
 *    index differs from guest_memfd's on purpose. When FUSE drops it, the
 *    folio goes back to guest_memfd with the wrong index: it is freed, not
 *    completed, and index 1 stays pending with a stale folio.
 *
 * Needs /dev/kvm, /dev/fuse and debugfs: missing any of them fails the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <linux/fuse.h>

#include "kselftest_harness.h"
#include "harness_util.h"

#define GMEM_PAGES	2
#define DEBUGFS		"/sys/kernel/debug"

/* The FUSE file system: a root directory holding one page-sized file. */
#define ROOT_INO	FUSE_ROOT_ID
#define FILE_INO	2
#define FILE_NAME	"f"
#define FUSE_MAX_WRITE	(128 << 10)
/* Room for any request: fuse_dev_do_read() wants max_write plus headers. */
#define FUSE_REQ_SIZE	(FUSE_MAX_WRITE + 4096)
#define FUSE_VALID_SECS	3600

/* How long the folio_owner worker gets to complete a pending conversion. */
#define SETTLE_MS	5000
/* How long FUSE gets to drop the pipe buffer after answering the READ. */
#define COPY_SETTLE_MS	1000

enum gmem_counter { PENDING, COMPLETED, CANCELLED, FREED, NR_COUNTERS };

static const char *const counter_names[NR_COUNTERS] = {
	"pending", "completed", "cancelled", "freed",
};

static long gmem_counter(enum gmem_counter c)
{
	char path[96];

	snprintf(path, sizeof(path), DEBUGFS "/kvm/gmem_%s_folios",
		 counter_names[c]);
	return file_long(path);
}

static void read_counters(long *val)
{
	int c;

	for (c = 0; c < NR_COUNTERS; c++)
		val[c] = gmem_counter(c);
}

/* Whether counter @c reads @want within @ms milliseconds. */
static bool counter_settles(enum gmem_counter c, long want, int ms)
{
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (gmem_counter(c) == want)
			return true;
		usleep(10 * 1000);
	}
	return false;
}

/* Whether *@flag is set within @ms milliseconds (set by another thread). */
static bool flag_set_within(const int *flag, int ms)
{
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (__atomic_load_n(flag, __ATOMIC_ACQUIRE))
			return true;
		usleep(10 * 1000);
	}
	return false;
}

static void drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	sync();
	if (fd < 0)
		return;
	if (write(fd, "3", 1) != 1)
		perror("drop_caches");
	close(fd);
}

/* What the host writes to the gifted page; a clean page reads zeros. */
static void expected_content(unsigned char *buf, size_t size, bool written)
{
	size_t i;

	for (i = 0; i < size; i++)
		buf[i] = written ? (unsigned char)(i * 7 + (i >> 8) + 1) : 0;
}

/*
 * /dev/kmsg, read from its end: fuse_check_folio() reports with
 * dump_page() a folio it stole but would not put in its page cache.
 */
static int kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

/* Whether a kernel message logged since kmsg_open() contains @what. */
static bool kmsg_contains(int fd, const char *what)
{
	char rec[1024];
	bool found = false;
	ssize_t n;

	if (fd < 0)
		return false;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;	/* overwritten records: read on */
		if (n <= 0)
			break;
		rec[n] = '\0';
		found |= strstr(rec, what) != NULL;
	}
	return found;
}

/*
 * A FUSE server without a library, on its own thread. It must not use the
 * harness's ASSERT_*(): it notes its first error in @err for the test.
 */
struct fuse_server {
	int fd;			/* /dev/fuse */
	int gift_fd;		/* read end of the pipe holding the gifted page */
	size_t page;
	pthread_t thread;
	int stop;
	int gift_used;		/* the READ answer that moves the gift is sent */
	int released;		/* FUSE_RELEASE seen */
	ssize_t gift_ret;	/* what splice() into /dev/fuse returned */
	const char *err;
	int err_no;
	char req[FUSE_REQ_SIZE] __attribute__((aligned(8)));
};

static void server_error(struct fuse_server *srv, const char *what, int err)
{
	if (!srv->err) {
		srv->err = what;
		srv->err_no = err;
	}
}

static int fuse_reply(struct fuse_server *srv, uint64_t unique, int error,
		      const void *data, size_t size)
{
	struct fuse_out_header out = {
		.len = sizeof(out) + size,
		.error = error,
		.unique = unique,
	};
	struct iovec iov[2] = {
		{ .iov_base = &out, .iov_len = sizeof(out) },
		{ .iov_base = (void *)data, .iov_len = size },
	};

	return writev(srv->fd, iov, size ? 2 : 1) == out.len ? 0 : -errno;
}

static void fuse_fill_attr(struct fuse_server *srv, struct fuse_attr *attr,
			   uint64_t ino)
{
	memset(attr, 0, sizeof(*attr));
	attr->ino = ino;
	attr->blksize = srv->page;
	attr->uid = getuid();
	attr->gid = getgid();
	if (ino == ROOT_INO) {
		attr->mode = S_IFDIR | 0755;
		attr->nlink = 2;
	} else {
		attr->mode = S_IFREG | 0444;
		attr->nlink = 1;
		attr->size = srv->page;
		attr->blocks = srv->page / 512;
	}
}

/*
 * The kernel's minor is echoed. Nothing here asks for FUSE_ASYNC_READ: the
 * READ is then sent synchronously from fuse_readahead(). The kernel offers
 * FUSE_SPLICE_{WRITE,MOVE,READ} but reads none of them back
 * (process_init_reply()): moving pages depends on SPLICE_F_MOVE alone.
 */
static void fuse_do_init(struct fuse_server *srv, const struct fuse_in_header *in)
{
	const struct fuse_init_in *arg = (const void *)(in + 1);
	struct fuse_init_out out = {
		.major = FUSE_KERNEL_VERSION,
		.minor = arg->minor,
		.max_readahead = arg->max_readahead,
		.flags = arg->flags & (FUSE_BIG_WRITES | FUSE_SPLICE_WRITE |
				       FUSE_SPLICE_MOVE | FUSE_SPLICE_READ),
		.max_write = FUSE_MAX_WRITE,
	};

	if (arg->major != FUSE_KERNEL_VERSION) {
		server_error(srv, "FUSE_INIT major", EPROTO);
		fuse_reply(srv, in->unique, -EPROTO, NULL, 0);
		return;
	}
	if (fuse_reply(srv, in->unique, 0, &out, sizeof(out)))
		server_error(srv, "FUSE_INIT reply", errno);
}

static void fuse_do_lookup(struct fuse_server *srv,
			   const struct fuse_in_header *in)
{
	const char *name = (const char *)(in + 1);
	struct fuse_entry_out out = {
		.nodeid = FILE_INO,
		.entry_valid = FUSE_VALID_SECS,
		.attr_valid = FUSE_VALID_SECS,
	};

	if (in->nodeid != ROOT_INO || strcmp(name, FILE_NAME)) {
		fuse_reply(srv, in->unique, -ENOENT, NULL, 0);
		return;
	}
	fuse_fill_attr(srv, &out.attr, FILE_INO);
	fuse_reply(srv, in->unique, 0, &out, sizeof(out));
}

static void fuse_do_getattr(struct fuse_server *srv,
			    const struct fuse_in_header *in)
{
	struct fuse_attr_out out = { .attr_valid = FUSE_VALID_SECS };

	fuse_fill_attr(srv, &out.attr, in->nodeid);
	fuse_reply(srv, in->unique, 0, &out, sizeof(out));
}

static void fuse_do_open(struct fuse_server *srv, const struct fuse_in_header *in)
{
	struct fuse_open_out out = { .fh = 1 };

	fuse_reply(srv, in->unique, 0, &out, sizeof(out));
}

/*
 * The READ reply as fuse_dev_splice_write() must see it to move the page:
 * the header alone in the first pipe buffer, so that it is used up exactly
 * where the page starts (fuse_copy_page() moves only with cs->len == 0,
 * offset 0 and a whole page), then the gifted buffer, whole, with
 * PIPE_BUF_FLAG_GIFT. write() puts the header in an anonymous buffer of its
 * own; splice_pipe_to_pipe() moves a whole buffer with its flags (it drops
 * PIPE_BUF_FLAG_GIFT only from part of one).
 */
static int fuse_reply_gift(struct fuse_server *srv, uint64_t unique)
{
	struct fuse_out_header out = {
		.len = sizeof(out) + srv->page,
		.unique = unique,
	};
	int pipe_b[2], r = 0;
	ssize_t n;

	if (pipe(pipe_b))
		return -errno;
	if (write(pipe_b[1], &out, sizeof(out)) != sizeof(out)) {
		r = -errno;
		goto out;
	}
	n = splice(srv->gift_fd, NULL, pipe_b[1], NULL, srv->page, 0);
	if (n != (ssize_t)srv->page) {
		r = n < 0 ? -errno : -EIO;
		goto out;
	}
	n = splice(pipe_b[0], NULL, srv->fd, NULL, out.len, SPLICE_F_MOVE);
	srv->gift_ret = n < 0 ? -errno : n;
	if (n != out.len)
		r = n < 0 ? -errno : -EIO;
out:
	close(pipe_b[0]);
	close(pipe_b[1]);
	return r;
}

static void fuse_do_read(struct fuse_server *srv, const struct fuse_in_header *in)
{
	const struct fuse_read_in *arg = (const void *)(in + 1);
	int r;

	/* EOF past the only page. */
	if (arg->offset >= srv->page) {
		fuse_reply(srv, in->unique, 0, NULL, 0);
		return;
	}
	if (in->nodeid != FILE_INO || arg->offset || arg->size < srv->page ||
	    __atomic_load_n(&srv->gift_used, __ATOMIC_RELAXED)) {
		server_error(srv, "unexpected FUSE_READ", EINVAL);
		fuse_reply(srv, in->unique, -EIO, NULL, 0);
		return;
	}
	r = fuse_reply_gift(srv, in->unique);
	if (r) {
		server_error(srv, "READ reply from the gifted page", -r);
		/* Unless the kernel ended it already, do not leave it waiting. */
		fuse_reply(srv, in->unique, -EIO, NULL, 0);
	}
	__atomic_store_n(&srv->gift_used, 1, __ATOMIC_RELEASE);
}

static void fuse_handle(struct fuse_server *srv, const struct fuse_in_header *in)
{
	switch (in->opcode) {
	case FUSE_INIT:
		fuse_do_init(srv, in);
		break;
	case FUSE_LOOKUP:
		fuse_do_lookup(srv, in);
		break;
	case FUSE_GETATTR:
		fuse_do_getattr(srv, in);
		break;
	case FUSE_OPEN:
		fuse_do_open(srv, in);
		break;
	case FUSE_READ:
		fuse_do_read(srv, in);
		break;
	case FUSE_RELEASE:
		fuse_reply(srv, in->unique, 0, NULL, 0);
		__atomic_store_n(&srv->released, 1, __ATOMIC_RELEASE);
		break;
	case FUSE_FLUSH:
	case FUSE_DESTROY:
		fuse_reply(srv, in->unique, 0, NULL, 0);
		break;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:
		break;		/* no reply */
	default:
		fuse_reply(srv, in->unique, -ENOSYS, NULL, 0);
		break;
	}
}

/* Serves until told to stop or until the connection goes (unmount). */
static void *fuse_serve(void *arg)
{
	struct fuse_server *srv = arg;
	struct pollfd pfd = { .fd = srv->fd, .events = POLLIN };
	ssize_t n;

	while (!__atomic_load_n(&srv->stop, __ATOMIC_ACQUIRE)) {
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
			break;
		n = read(srv->fd, srv->req, sizeof(srv->req));
		if (n < 0 && (errno == EINTR || errno == EAGAIN ||
			      errno == ENOENT))
			continue;
		if (n < 0) {
			if (errno != ENODEV)
				server_error(srv, "read /dev/fuse", errno);
			break;
		}
		if (n < (ssize_t)sizeof(struct fuse_in_header)) {
			server_error(srv, "short FUSE request", EPROTO);
			break;
		}
		fuse_handle(srv, (const struct fuse_in_header *)srv->req);
	}
	return NULL;
}

FIXTURE(fuse_steal) {
	size_t page;
	char *map;			/* guest_memfd, MAP_SHARED */
	int gift[2];			/* pipe A: the gifted page */
	char dir[32];			/* the FUSE mount point */
	bool mounted, serving;
	int kmsg;
	struct fuse_server *srv;
};

FIXTURE_VARIANT(fuse_steal) {
	unsigned int index;		/* the guest_memfd page gifted */
	bool written;			/* host-written (dirty), or only read */
};

FIXTURE_VARIANT_ADD(fuse_steal, written_page0) {
	.index = 0,
	.written = true,
};

FIXTURE_VARIANT_ADD(fuse_steal, clean_page1) {
	.index = 1,
	.written = false,
};

/* The gmem_*_folios counters, mounting debugfs if nobody did. */
static void debugfs_counters_ready(struct __test_metadata *_metadata)
{
	if (gmem_counter(PENDING) < 0)
		mount("debugfs", DEBUGFS, "debugfs", 0, NULL);
	ASSERT_GE(gmem_counter(PENDING), 0)
		TH_LOG("no " DEBUGFS "/kvm/gmem_pending_folios");
}

/*
 * A mount namespace of its own, so that the FUSE mount goes with the test
 * process whatever happens; before any thread (unshare() refuses after).
 */
FIXTURE_SETUP(fuse_steal)
{
	self->page = getpagesize();
	self->map = MAP_FAILED;
	self->gift[0] = self->gift[1] = -1;
	self->kmsg = -1;
	self->srv = calloc(1, sizeof(*self->srv));
	ASSERT_NE(self->srv, NULL);
	self->srv->fd = -1;
	self->srv->page = self->page;

	ASSERT_EQ(unshare(CLONE_NEWNS), 0) TH_LOG("unshare: %s", strerror(errno));
	ASSERT_EQ(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
	debugfs_counters_ready(_metadata);
	ASSERT_EQ(access("/dev/fuse", R_OK | W_OK), 0)
		TH_LOG("/dev/fuse: %s", strerror(errno));

	gmem_fd = gmem_create(GMEM_PAGES * self->page);
	ASSERT_GE(gmem_fd, 0)
		TH_LOG("guest_memfd of a KVM_X86_SW_PROTECTED_VM: %s",
		       strerror(errno));
}

/* Unmounts, which drops FUSE's page cache, and stops the server. */
static void fuse_stop(FIXTURE_DATA(fuse_steal) *self)
{
	struct fuse_server *srv = self->srv;

	if (self->mounted) {
		umount2(self->dir, MNT_DETACH);
		self->mounted = false;
	}
	if (self->serving) {
		__atomic_store_n(&srv->stop, 1, __ATOMIC_RELEASE);
		pthread_join(srv->thread, NULL);
		self->serving = false;
	}
	if (srv->fd >= 0) {
		close(srv->fd);
		srv->fd = -1;
	}
	if (self->dir[0]) {
		rmdir(self->dir);
		self->dir[0] = '\0';
	}
}

FIXTURE_TEARDOWN(fuse_steal)
{
	fuse_stop(self);
	if (self->gift[0] >= 0)
		close(self->gift[0]);
	if (self->gift[1] >= 0)
		close(self->gift[1]);
	if (self->map != MAP_FAILED)
		munmap(self->map, GMEM_PAGES * self->page);
	if (self->kmsg >= 0)
		close(self->kmsg);
	close(gmem_fd);
	close(gmem_vm_fd);
	free(self->srv);
}

/*
 * Maps the guest_memfd, writes the variant's page or only reads it (a read
 * fault maps it read-only and clean), and gifts it to pipe A.
 */
static void gift_page(struct __test_metadata *_metadata,
		      FIXTURE_DATA(fuse_steal) *self,
		      const FIXTURE_VARIANT(fuse_steal) *variant)
{
	int prot = PROT_READ | (variant->written ? PROT_WRITE : 0);
	struct iovec iov = { .iov_len = self->page };
	char *p;

	self->map = mmap(NULL, GMEM_PAGES * self->page, prot,
			 MAP_SHARED | MAP_POPULATE, gmem_fd, 0);
	ASSERT_NE(self->map, MAP_FAILED) TH_LOG("mmap: %s", strerror(errno));
	p = self->map + variant->index * self->page;
	if (variant->written)
		expected_content((unsigned char *)p, self->page, true);
	else
		ASSERT_TRUE(host_can_read(p));

	ASSERT_EQ(pipe(self->gift), 0);
	iov.iov_base = p;
	ASSERT_EQ(vmsplice(self->gift[1], &iov, 1, SPLICE_F_GIFT),
		  (ssize_t)self->page) TH_LOG("vmsplice: %s", strerror(errno));

	ASSERT_EQ(munmap(self->map, GMEM_PAGES * self->page), 0);
	self->map = MAP_FAILED;
}

/* Mounts the FUSE file system and starts serving it. */
static void fuse_start(struct __test_metadata *_metadata,
		       FIXTURE_DATA(fuse_steal) *self)
{
	struct fuse_server *srv = self->srv;
	char opts[128];

	snprintf(self->dir, sizeof(self->dir), "/tmp/fuse_steal.XXXXXX");
	ASSERT_NE(mkdtemp(self->dir), NULL) TH_LOG("%s", strerror(errno));

	srv->fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	ASSERT_GE(srv->fd, 0) TH_LOG("/dev/fuse: %s", strerror(errno));
	srv->gift_fd = self->gift[0];
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=%u,group_id=%u",
		 srv->fd, getuid(), getgid());
	ASSERT_EQ(mount("fuse", self->dir, "fuse", MS_NODEV | MS_NOSUID, opts), 0)
		TH_LOG("mount fuse: %s", strerror(errno));
	self->mounted = true;

	/* /dev/fuse polls as an error until mounted: start serving now. */
	ASSERT_EQ(pthread_create(&srv->thread, NULL, fuse_serve, srv), 0);
	self->serving = true;
}

/* Reads the file through FUSE's page cache (readahead: no O_DIRECT). */
static void client_read(struct __test_metadata *_metadata,
			FIXTURE_DATA(fuse_steal) *self, const void *expect)
{
	char path[64], *buf = malloc(self->page);
	int fd;

	ASSERT_NE(buf, NULL);
	snprintf(path, sizeof(path), "%s/" FILE_NAME, self->dir);
	fd = open(path, O_RDONLY);
	ASSERT_GE(fd, 0) TH_LOG("open %s: %s", path, strerror(errno));
	ASSERT_EQ(pread(fd, buf, self->page, 0), (ssize_t)self->page)
		TH_LOG("pread: %s; server: %s (%s)", strerror(errno),
		       self->srv->err ?: "ok", strerror(self->srv->err_no));
	EXPECT_EQ(memcmp(buf, expect, self->page), 0)
		TH_LOG("the client read other data than the gifted page's");
	EXPECT_EQ(close(fd), 0);
	free(buf);
}

/*
 * Whether FUSE kept the pending folio: had it copied it, its last reference
 * would have gone with the pipe buffer, at the end of the splice().
 */
static void report_steal(struct __test_metadata *_metadata,
			 FIXTURE_DATA(fuse_steal) *self, long pending0)
{
	struct fuse_server *srv = self->srv;

	ASSERT_TRUE(flag_set_within(&srv->gift_used, SETTLE_MS));
	ASSERT_EQ(srv->err, NULL) TH_LOG("FUSE server: %s: %s", srv->err,
					  strerror(srv->err_no));
	ASSERT_EQ(srv->gift_ret, (ssize_t)(sizeof(struct fuse_out_header) +
					   self->page));

	if (!counter_settles(PENDING, pending0, COPY_SETTLE_MS))
		TH_LOG("steal: FUSE moved the pending folio into its page cache");
	else if (kmsg_contains(self->kmsg, "trying to steal weird page"))
		TH_LOG("steal: the pipe gave the pending folio away; FUSE refused it (%s)",
		       "dump_page(): trying to steal weird page");
	else
		TH_LOG("steal: not seen; FUSE copied the pending folio%s",
		       self->kmsg < 0 ? " (no /dev/kmsg to tell)" : "");
}

/*
 * The index is private, and back to shared it holds what the host wrote:
 * conversions keep the content, and a folio that lost PG_uptodate would
 * be cleared by its next fault.
 */
static void check_page_back(struct __test_metadata *_metadata,
			    FIXTURE_DATA(fuse_steal) *self,
			    const FIXTURE_VARIANT(fuse_steal) *variant,
			    const void *expect)
{
	size_t offset = variant->index * self->page;
	uint64_t error = 0;
	char *p;

	self->map = mmap(NULL, GMEM_PAGES * self->page, PROT_READ, MAP_SHARED,
			 gmem_fd, 0);
	ASSERT_NE(self->map, MAP_FAILED) TH_LOG("mmap: %s", strerror(errno));
	p = self->map + offset;
	EXPECT_FALSE(host_can_read(p)) TH_LOG("private page readable by the host");

	ASSERT_EQ(gmem_convert(offset, self->page, false, 0, &error), 0)
		TH_LOG("back to shared: %s, error offset %llu", strerror(errno),
		       (unsigned long long)error);
	ASSERT_TRUE(host_can_read(p));
	EXPECT_EQ(memcmp(p, expect, self->page), 0)
		TH_LOG("content lost: the folio came back not uptodate?");
}

TEST_F(fuse_steal, read_reply_from_pending_folio)
{
	size_t offset = variant->index * self->page;
	long before[NR_COUNTERS], after[NR_COUNTERS];
	unsigned char *expect = malloc(self->page);

	ASSERT_NE(expect, NULL);
	expected_content(expect, self->page, variant->written);
	read_counters(before);
	TH_LOG("guest_memfd page %u, %s", variant->index,
	       variant->written ? "written by the host (dirty)" : "only read (clean)");

	gift_page(_metadata, self, variant);
	ASSERT_EQ(gmem_convert(offset, self->page, true,
			       KVM_SET_MEMORY_ATTRIBUTES2_DEFER, NULL), 1)
		TH_LOG("KVM_SET_MEMORY_ATTRIBUTES2: %s", strerror(errno));
	ASSERT_EQ(gmem_counter(PENDING), before[PENDING] + 1);

	self->kmsg = kmsg_open();
	fuse_start(_metadata, self);
	client_read(_metadata, self, expect);
	/* FUSE_RELEASE is sent in the background: let it be answered. */
	flag_set_within(&self->srv->released, SETTLE_MS);
	report_steal(_metadata, self, before[PENDING]);

	/* Whatever FUSE holds goes now; so does whatever the pipes hold. */
	fuse_stop(self);
	close(self->gift[0]);
	close(self->gift[1]);
	self->gift[0] = self->gift[1] = -1;
	drop_caches();

	EXPECT_TRUE(counter_settles(PENDING, before[PENDING], SETTLE_MS));
	read_counters(after);
	EXPECT_EQ(after[FREED], before[FREED]);
	EXPECT_EQ(after[CANCELLED], before[CANCELLED]);
	/*
	 * A folio freed instead may have left its index pending with a stale
	 * folio, which converting the index would touch: stop here.
	 */
	ASSERT_EQ(after[COMPLETED], before[COMPLETED] + 1)
		TH_LOG("completed %ld -> %ld, freed %ld -> %ld: not back in guest_memfd",
		       before[COMPLETED], after[COMPLETED], before[FREED],
		       after[FREED]);

	check_page_back(_metadata, self, variant, expect);
	free(expect);
}

TEST_HARNESS_MAIN
