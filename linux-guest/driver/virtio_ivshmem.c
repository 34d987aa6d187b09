// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_ivshmem: a virtio transport over ivshmem-doorbell devices, so that the kernel's own
 * virtio drivers (virtio-rng, virtio_console, vsock, ...) drive a device that a vhost-bridge peer
 * publishes in the shared memory and an unmodified vhost-user backend serves. The protocol is
 * docs/virtio-over-ivshmem.md (layout version 1, virtio-ivshmem/src/layout.rs).
 *
 * Each header gets an arena of the shared memory. The rings are allocated in it, and because the
 * backend sees the shared memory only, every buffer a driver hands over is bounced through it:
 * the transport offers VIRTIO_F_ACCESS_PLATFORM to the driver, so the virtio core maps buffers
 * with the DMA API on the virtio device's parent, a per-header device whose dma_map_ops copy into
 * (and back out of) the arena and return the arena offset, which is what the backend takes as a
 * guest-physical address. The bridge never sees ACCESS_PLATFORM: it is ours alone.
 *
 * Headers are attached by offset (module parameter virtio=, sysfs virtio_attach) or found by
 * scanning the shared memory (virtio_discover). A poll notices the header going away, the bridge
 * being replaced (generation bumped, our claim cleared) or DEVICE_NEEDS_RESET: the virtio device
 * is unregistered then, and registered again once a bridge publishes the header anew.
 */
#include <linux/dma-map-ops.h>
#include <linux/genalloc.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "ivshmem_kernel.h"

/* The layout, version 1 (virtio-ivshmem/src/layout.rs). */
#define VI_MAGIC 0x4853564954524956ULL	/* "VIRTIVSH" little-endian */
#define VI_VERSION 1
#define VI_HEADER_SIZE 4096
#define VI_MAX_QUEUES 32
#define VI_NO_PEER 0xffffffffU
#define VI_REQUEST_VECTOR 0

#define VI_MAGIC_OFF 0x00
#define VI_VERSION_OFF 0x08
#define VI_HEADER_SIZE_OFF 0x0c
#define VI_DEVICE_ID 0x10
#define VI_DEVICE_PEER 0x14
#define VI_NUM_QUEUES 0x18
#define VI_GENERATION 0x1c
#define VI_DEVICE_FEATURES 0x20
#define VI_DRIVER_FEATURES 0x28
#define VI_DEVICE_STATUS 0x30
#define VI_DRIVER_STATUS 0x34
#define VI_REQUEST 0x38
#define VI_ACK 0x3c
#define VI_DRIVER_PEER 0x40
#define VI_DRIVER_CONFIG_VECTOR 0x44
#define VI_ERROR 0x48
#define VI_CONFIG_SIZE 0x4c
#define VI_QUEUES 0x100
#define VI_QUEUE_STRIDE 0x40
#define VI_CONFIG 0xc00
#define VI_CONFIG_MAX 0x400

#define VI_Q_MAX_SIZE 0x00
#define VI_Q_SIZE 0x04
#define VI_Q_KICK_VECTOR 0x08
#define VI_Q_CALL_VECTOR 0x0c
#define VI_Q_DESC 0x10
#define VI_Q_AVAIL 0x18
#define VI_Q_USED 0x20

#define VI_MAX_SPECS 8
/* Smallest bounce allocation: 2^6 bytes. */
#define VI_MIN_ALLOC_ORDER 6

static char *virtio;
module_param(virtio, charp, 0444);
MODULE_PARM_DESC(virtio,
		 "headers to attach on every ivshmem device: HDR[:ARENA:LEN][,...] (byte offsets; default arena: from the header's end to the next header or the end of the memory)");
static bool virtio_discover = true;
module_param(virtio_discover, bool, 0644);
MODULE_PARM_DESC(virtio_discover, "scan the shared memory for published headers (default: on)");
static unsigned long virtio_scan_limit = 64 << 20;
module_param(virtio_scan_limit, ulong, 0644);
MODULE_PARM_DESC(virtio_scan_limit, "bytes of shared memory the discovery scans (default 64 MiB)");
static unsigned long virtio_arena_size = 2 << 20;
module_param(virtio_arena_size, ulong, 0644);
MODULE_PARM_DESC(virtio_arena_size,
		 "bytes of the default arena, right after the header (default 2 MiB; less when the next header or the memory's end comes first)");
static unsigned int virtio_queue_size = 128;
module_param(virtio_queue_size, uint, 0644);
MODULE_PARM_DESC(virtio_queue_size,
		 "largest queue size set up (default 128; the device's maximum when smaller): every buffer a driver keeps posted takes arena room");
/*
 * One vector for all of a device's queues by default: the answers of several queues that come
 * together then take one interrupt (vsock's tx completion and rx: 1.8-2.0 interrupts per round
 * trip instead of 2.1, as QEMU's vhost-user-vsock-pci), and the ivshmem device's vectors, which
 * all devices in its memory share, go further. A vector per queue lets a multi-queue device's
 * queues be served on different CPUs.
 */
static bool virtio_shared_vector = true;
module_param(virtio_shared_vector, bool, 0644);
MODULE_PARM_DESC(virtio_shared_vector,
		 "one MSI-X vector for all of a device's queues (default: on; off: a vector per queue while vectors last)");
static unsigned int virtio_timeout_ms = 10000;
module_param(virtio_timeout_ms, uint, 0644);
MODULE_PARM_DESC(virtio_timeout_ms, "how long a status request waits for the bridge (ms)");
static unsigned int virtio_poll_ms = 500;
module_param(virtio_poll_ms, uint, 0644);
MODULE_PARM_DESC(virtio_poll_ms, "how often the headers are checked (ms)");

static const char * const vi_errors[] = {
	"none", "unknown driver peer", "features refused", "bad queue size",
	"bad ring address", "bad call vector", "backend failed", "bad status sequence",
	"bad config vector",
};

struct vi_host;

/*
 * A bounce mapping: where the buffer really is. One per arena granule, in a table allocated
 * with the device (size 0: no mapping starts there), so that a request allocates and frees
 * nothing: RCU-freed xarray nodes made /dev/hwrng readers yield a tick per request
 * (docs/virtio-over-ivshmem.md).
 */
struct vi_map {
	phys_addr_t orig;
	size_t size;
};

struct vi_vq {
	struct virtqueue *vq;
	int vector;		/* our MSI-X vector, -1 when none */
	bool shared;		/* the vector serves every queue */
	u16 kick;
};

/*
 * One attached header. `dev` is the parent of the virtio device and carries the bounce DMA ops;
 * its refcount owns this struct (the arena pool and the leftover mappings go with it).
 */
struct vi_dev {
	struct device dev;
	struct vi_host *host;
	struct list_head node;		/* host->devices */
	u64 base;
	u64 arena, arena_len;
	struct gen_pool *pool;
	struct vi_map *maps;		/* arena chunk -> its mapping */
	struct virtio_device *vdev;	/* registered, or NULL */
	struct mutex req_lock;		/* status requests */
	wait_queue_head_t wq;		/* the config vector */
	bool gone;			/* the device side is gone: requests fail at once */
	u32 asked;			/* the last status asked for */
	u32 me;
	u16 device_peer;
	u32 generation;
	int config_vector;
	unsigned int nvqs;
	int shared_vector;
	struct vi_vq vqs[VI_MAX_QUEUES];
};

struct vi_vdev {
	struct virtio_device vdev;
	struct vi_dev *vd;
};

struct vi_spec {
	u64 base, arena, arena_len;	/* arena_len 0: the default arena */
	/*
	 * The bridge stopped answering here: not attached again until the header changes (another
	 * bridge peer or generation), so a dead bridge's header costs one timeout, not one a poll.
	 */
	bool dead;
	u32 dead_peer, dead_generation;
};

/* Per ivshmem device. */
struct vi_host {
	struct ivshmem_dev *idev;
	struct device *dev;
	void *shm;
	u64 shm_len;
	u32 me;
	unsigned int nvectors;
	struct mutex lock;		/* devices, specs; held across (un)registration */
	struct mutex vec_lock;		/* vec_use */
	struct list_head devices;
	struct vi_spec specs[VI_MAX_SPECS];
	unsigned int nspecs;
	unsigned long *vec_used;
	struct delayed_work poll;
	bool stopping;
	struct list_head node;		/* vi_hosts */
};

static DEFINE_MUTEX(vi_hosts_lock);
static LIST_HEAD(vi_hosts);

static struct vi_dev *to_vi(struct device *dev)
{
	return container_of(dev, struct vi_dev, dev);
}

static struct vi_dev *vdev_vi(struct virtio_device *vdev)
{
	return container_of(vdev, struct vi_vdev, vdev)->vd;
}

/* Header fields: naturally aligned little-endian words in write-back memory. */
static void *vi_field(struct vi_host *h, u64 base, unsigned int off)
{
	return h->shm + base + off;
}

static u32 vi_get(struct vi_dev *vd, unsigned int off)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)vi_field(vd->host, vd->base, off)));
}

static void vi_set(struct vi_dev *vd, unsigned int off, u32 val)
{
	WRITE_ONCE(*(__le32 *)vi_field(vd->host, vd->base, off), cpu_to_le32(val));
}

static u64 vi_get64(struct vi_host *h, u64 base, unsigned int off)
{
	return le64_to_cpu(READ_ONCE(*(__le64 *)vi_field(h, base, off)));
}

static void vi_set64(struct vi_dev *vd, unsigned int off, u64 val)
{
	WRITE_ONCE(*(__le64 *)vi_field(vd->host, vd->base, off), cpu_to_le64(val));
}

static unsigned int vi_qoff(unsigned int q, unsigned int f)
{
	return VI_QUEUES + q * VI_QUEUE_STRIDE + f;
}

static bool vi_published(struct vi_host *h, u64 base)
{
	u32 *w = vi_field(h, base, 0);

	if (vi_get64(h, base, VI_MAGIC_OFF) != VI_MAGIC)
		return false;
	smp_rmb();
	return le32_to_cpu(READ_ONCE(w[VI_VERSION_OFF / 4])) == VI_VERSION &&
	       le32_to_cpu(READ_ONCE(w[VI_HEADER_SIZE_OFF / 4])) == VI_HEADER_SIZE;
}

/* Bounce DMA ops on vd->dev: the arena's offsets are the addresses. */

static void *vi_dma_alloc(struct device *dev, size_t size, dma_addr_t *dma, gfp_t gfp,
			  unsigned long attrs)
{
	struct vi_dev *vd = to_vi(dev);
	void *va;

	va = gen_pool_dma_zalloc_align(vd->pool, size, dma, PAGE_SIZE);
	if (!va)
		dev_err(dev, "arena exhausted: no room for %zu bytes of rings\n", size);
	return va;
}

static void vi_dma_free(struct device *dev, size_t size, void *va, dma_addr_t dma,
			unsigned long attrs)
{
	gen_pool_free(to_vi(dev)->pool, (unsigned long)va, size);
}

/* The arena's kernel address of dma (an arena address). */
static void *vi_arena_va(struct vi_dev *vd, dma_addr_t dma)
{
	return (u8 *)vd->host->shm + dma;
}

/* The table entry of the granule at dma (an address gen_pool gave out). */
static struct vi_map *vi_slot(struct vi_dev *vd, dma_addr_t dma)
{
	return &vd->maps[(dma - vd->arena) >> VI_MIN_ALLOC_ORDER];
}

/* The mapping that starts at dma (an address the driver hands back), or NULL when none does. */
static struct vi_map *vi_map_of(struct vi_dev *vd, dma_addr_t dma)
{
	struct vi_map *m;

	if (dma < vd->arena || dma - vd->arena >= vd->arena_len ||
	    (dma - vd->arena) & ((1 << VI_MIN_ALLOC_ORDER) - 1))
		return NULL;
	m = vi_slot(vd, dma);
	return m->size ? m : NULL;
}

static dma_addr_t vi_map_page(struct device *dev, struct page *page, unsigned long offset,
			      size_t size, enum dma_data_direction dir, unsigned long attrs)
{
	struct vi_dev *vd = to_vi(dev);
	unsigned long va;
	struct vi_map *m;
	dma_addr_t dma;

	if (!size)
		size = 1;
	va = gen_pool_alloc(vd->pool, size);
	if (!va) {
		dev_err_ratelimited(dev, "bounce arena exhausted: no room for %zu bytes (arena %llu bytes)\n",
				    size, vd->arena_len);
		return DMA_MAPPING_ERROR;
	}
	dma = gen_pool_virt_to_phys(vd->pool, va);
	m = vi_slot(vd, dma);
	m->orig = page_to_phys(page) + offset;
	m->size = size;
	/* Always, as swiotlb does: the device must not see what the arena held before. */
	memcpy((void *)va, phys_to_virt(m->orig), size);
	return dma;
}

static void vi_unmap_page(struct device *dev, dma_addr_t dma, size_t size,
			  enum dma_data_direction dir, unsigned long attrs)
{
	struct vi_dev *vd = to_vi(dev);
	struct vi_map *m = vi_map_of(vd, dma);
	size_t len;

	if (!m) {
		dev_err_ratelimited(dev, "unmap of %pad: not a mapping of ours\n", &dma);
		return;
	}
	len = m->size;
	if (dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL)
		memcpy(phys_to_virt(m->orig), vi_arena_va(vd, dma), len);
	m->size = 0;
	gen_pool_free(vd->pool, (unsigned long)vi_arena_va(vd, dma), len);
}

static void vi_sync_for_cpu(struct device *dev, dma_addr_t dma, size_t size,
			    enum dma_data_direction dir)
{
	struct vi_dev *vd = to_vi(dev);
	struct vi_map *m = vi_map_of(vd, dma);

	if (m && (dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL))
		memcpy(phys_to_virt(m->orig), vi_arena_va(vd, dma), min(size, m->size));
}

static void vi_sync_for_device(struct device *dev, dma_addr_t dma, size_t size,
			       enum dma_data_direction dir)
{
	struct vi_dev *vd = to_vi(dev);
	struct vi_map *m = vi_map_of(vd, dma);

	if (m && (dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL))
		memcpy(vi_arena_va(vd, dma), phys_to_virt(m->orig), min(size, m->size));
}

static void vi_unmap_sg(struct device *dev, struct scatterlist *sgl, int nents,
			enum dma_data_direction dir, unsigned long attrs)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		vi_unmap_page(dev, sg_dma_address(sg), sg_dma_len(sg), dir, attrs);
}

static int vi_map_sg(struct device *dev, struct scatterlist *sgl, int nents,
		     enum dma_data_direction dir, unsigned long attrs)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i) {
		sg_dma_address(sg) = vi_map_page(dev, sg_page(sg), sg->offset, sg->length,
						 dir, attrs);
		if (sg_dma_address(sg) == DMA_MAPPING_ERROR) {
			vi_unmap_sg(dev, sgl, i, dir, attrs);
			return -ENOMEM;
		}
		sg_dma_len(sg) = sg->length;
	}
	return nents;
}

static int vi_dma_supported(struct device *dev, u64 mask)
{
	return 1;
}

static size_t vi_max_mapping_size(struct device *dev)
{
	return to_vi(dev)->arena_len / 4;
}

static const struct dma_map_ops vi_dma_ops = {
	.alloc = vi_dma_alloc,
	.free = vi_dma_free,
	.map_page = vi_map_page,
	.unmap_page = vi_unmap_page,
	.map_sg = vi_map_sg,
	.unmap_sg = vi_unmap_sg,
	.sync_single_for_cpu = vi_sync_for_cpu,
	.sync_single_for_device = vi_sync_for_device,
	.dma_supported = vi_dma_supported,
	.max_mapping_size = vi_max_mapping_size,
};

/* Vectors */

static int vi_take_vector(struct vi_host *h, void (*fn)(void *), void *data)
{
	unsigned int v;
	int ret = -EBUSY;

	mutex_lock(&h->vec_lock);
	for (v = 0; v < h->nvectors; v++) {
		if (test_bit(v, h->vec_used))
			continue;
		if (!ivshmem_claim_vector(h->idev, v, fn, data)) {
			set_bit(v, h->vec_used);
			ret = v;
			break;
		}
	}
	mutex_unlock(&h->vec_lock);
	return ret;
}

static void vi_give_vector(struct vi_host *h, int v)
{
	if (v < 0)
		return;
	ivshmem_release_vector(h->idev, v);
	mutex_lock(&h->vec_lock);
	clear_bit(v, h->vec_used);
	mutex_unlock(&h->vec_lock);
}

static void vi_config_irq(void *data)
{
	struct vi_dev *vd = data;

	wake_up(&vd->wq);
}

static void vi_vq_irq(void *data)
{
	struct virtqueue *vq = READ_ONCE(((struct vi_vq *)data)->vq);

	if (vq)
		vring_interrupt(0, vq);
}

static void vi_shared_irq(void *data)
{
	struct vi_dev *vd = data;
	unsigned int i;

	for (i = 0; i < vd->nvqs; i++) {
		struct virtqueue *vq = READ_ONCE(vd->vqs[i].vq);

		if (vq)
			vring_interrupt(0, vq);
	}
}

/* Status requests */

static int vi_request(struct vi_dev *vd, u32 status)
{
	u32 seq, err;
	long left;

	mutex_lock(&vd->req_lock);
	WRITE_ONCE(vd->asked, status);
	if (READ_ONCE(vd->gone)) {
		mutex_unlock(&vd->req_lock);
		return -ENODEV;
	}
	vi_set(vd, VI_DRIVER_STATUS, status);
	seq = vi_get(vd, VI_REQUEST) + 1;
	smp_wmb();
	vi_set(vd, VI_REQUEST, seq);
	wmb();	/* the fields before the doorbell */
	ivshmem_ring(vd->host->idev, vd->device_peer, VI_REQUEST_VECTOR);
	left = wait_event_timeout(vd->wq, vi_get(vd, VI_ACK) == seq || READ_ONCE(vd->gone),
				  msecs_to_jiffies(virtio_timeout_ms));
	if (!left || READ_ONCE(vd->gone)) {
		dev_err(&vd->dev, "the bridge (peer %u) did not answer status %#x within %u ms: device gone\n",
			vd->device_peer, status, virtio_timeout_ms);
		WRITE_ONCE(vd->gone, true);
		mutex_unlock(&vd->req_lock);
		if (!READ_ONCE(vd->host->stopping))
			mod_delayed_work(system_wq, &vd->host->poll, 0);
		return -ETIMEDOUT;
	}
	smp_rmb();
	/* A reset we asked for is the one generation change that is ours. */
	vd->generation = vi_get(vd, VI_GENERATION);
	err = vi_get(vd, VI_ERROR);
	mutex_unlock(&vd->req_lock);
	if (err) {
		dev_err(&vd->dev, "the bridge refused status %#x: %s (%u)\n", status,
			err < ARRAY_SIZE(vi_errors) ? vi_errors[err] : "unknown error", err);
		return -EIO;
	}
	return 0;
}

/* virtio_config_ops */

static void vi_get_config(struct virtio_device *vdev, unsigned int offset, void *buf,
			  unsigned int len)
{
	struct vi_dev *vd = vdev_vi(vdev);
	u8 *p = buf;
	unsigned int i;

	for (i = 0; i < len; i++)
		p[i] = offset + i < VI_CONFIG_MAX ?
			READ_ONCE(*(u8 *)vi_field(vd->host, vd->base, VI_CONFIG + offset + i)) : 0;
}

static void vi_set_config(struct virtio_device *vdev, unsigned int offset, const void *buf,
			  unsigned int len)
{
	dev_warn_once(&vdev->dev, "configuration writes are not part of the layout: ignored\n");
}

static u32 vi_generation(struct virtio_device *vdev)
{
	return vi_get(vdev_vi(vdev), VI_GENERATION);
}

static u8 vi_get_status(struct virtio_device *vdev)
{
	struct vi_dev *vd = vdev_vi(vdev);

	/*
	 * With the device side gone, a reset is as done as it will get (the device goes with it);
	 * anything else needs one.
	 */
	if (READ_ONCE(vd->gone))
		return READ_ONCE(vd->asked) ? VIRTIO_CONFIG_S_NEEDS_RESET : 0;
	return vi_get(vd, VI_DEVICE_STATUS) & 0xff;
}

static void vi_set_status(struct virtio_device *vdev, u8 status)
{
	/* A refusal shows in the status the core reads back (FEATURES_OK cleared, ...). */
	vi_request(vdev_vi(vdev), status);
}

static void vi_reset(struct virtio_device *vdev)
{
	vi_request(vdev_vi(vdev), 0);
}

static u64 vi_get_features(struct virtio_device *vdev)
{
	struct vi_dev *vd = vdev_vi(vdev);

	/* ACCESS_PLATFORM is ours: it makes the core map buffers through the bounce arena. */
	return vi_get64(vd->host, vd->base, VI_DEVICE_FEATURES) | BIT_ULL(VIRTIO_F_ACCESS_PLATFORM);
}

static int vi_finalize_features(struct virtio_device *vdev)
{
	struct vi_dev *vd = vdev_vi(vdev);

	vring_transport_features(vdev);
	if (!__virtio_test_bit(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vd->dev, "the device does not offer VIRTIO_F_VERSION_1\n");
		return -EINVAL;
	}
	if (!__virtio_test_bit(vdev, VIRTIO_F_ACCESS_PLATFORM)) {
		dev_err(&vd->dev, "the driver refused VIRTIO_F_ACCESS_PLATFORM: its buffers cannot be bounced\n");
		return -EINVAL;
	}
	vi_set64(vd, VI_DRIVER_FEATURES, vdev->features & ~BIT_ULL(VIRTIO_F_ACCESS_PLATFORM));
	return 0;
}

static bool vi_notify(struct virtqueue *vq)
{
	struct vi_dev *vd = vdev_vi(vq->vdev);

	if (READ_ONCE(vd->gone))
		return false;
	ivshmem_ring(vd->host->idev, vd->device_peer, vd->vqs[vq->index].kick);
	return true;
}

static void vi_del_vqs(struct virtio_device *vdev)
{
	struct vi_dev *vd = vdev_vi(vdev);
	struct vi_host *h = vd->host;
	unsigned int i;

	/* No handler runs once the vectors are given back; then the rings can go. */
	for (i = 0; i < vd->nvqs; i++) {
		if (!vd->vqs[i].shared)
			vi_give_vector(h, vd->vqs[i].vector);
		vd->vqs[i].vector = -1;
	}
	vi_give_vector(h, vd->shared_vector);
	vd->shared_vector = -1;
	for (i = 0; i < vd->nvqs; i++) {
		if (vd->vqs[i].vq)
			vring_del_virtqueue(vd->vqs[i].vq);
		vd->vqs[i].vq = NULL;
		vi_set(vd, vi_qoff(i, VI_Q_SIZE), 0);
	}
	vd->nvqs = 0;
}

static int vi_setup_vq(struct vi_dev *vd, unsigned int i, vq_callback_t *cb, const char *name,
		       bool ctx)
{
	struct virtio_device *vdev = vd->vdev;
	struct vi_vq *q = &vd->vqs[i];
	u32 dev_max = vi_get(vd, vi_qoff(i, VI_Q_MAX_SIZE));
	u32 kick = vi_get(vd, vi_qoff(i, VI_Q_KICK_VECTOR));
	struct virtqueue *vq;
	u32 num;

	if (!dev_max || kick > 0xffff) {
		dev_err(&vd->dev, "queue %u: max size %u, kick vector %u\n", i, dev_max, kick);
		return -EINVAL;
	}
	q->kick = kick;
	num = rounddown_pow_of_two(min_t(u32, dev_max, max(virtio_queue_size, 1U)));
	vq = vring_create_virtqueue(i, num,
				    SMP_CACHE_BYTES, vdev, true, true, ctx, vi_notify, cb, name);
	if (!vq) {
		dev_err(&vd->dev, "queue %u: no ring (arena %llu bytes)\n", i, vd->arena_len);
		return -ENOMEM;
	}
	WRITE_ONCE(q->vq, vq);
	vi_set(vd, vi_qoff(i, VI_Q_SIZE), virtqueue_get_vring_size(vq));
	vi_set(vd, vi_qoff(i, VI_Q_CALL_VECTOR), q->vector);
	vi_set64(vd, vi_qoff(i, VI_Q_DESC), virtqueue_get_desc_addr(vq));
	vi_set64(vd, vi_qoff(i, VI_Q_AVAIL), virtqueue_get_avail_addr(vq));
	vi_set64(vd, vi_qoff(i, VI_Q_USED), virtqueue_get_used_addr(vq));
	return 0;
}

static int vi_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue *vqs[],
		       vq_callback_t *callbacks[], const char * const names[], const bool *ctx,
		       struct irq_affinity *desc)
{
	struct vi_dev *vd = vdev_vi(vdev);
	struct vi_host *h = vd->host;
	unsigned int i, queues = min_t(u32, vi_get(vd, VI_NUM_QUEUES), VI_MAX_QUEUES);
	int ret, v;

	if (nvqs > queues) {
		dev_err(&vd->dev, "the driver wants %u queues, the device has %u\n", nvqs, queues);
		return -ENOENT;
	}
	vd->nvqs = nvqs;
	for (i = 0; i < nvqs; i++) {
		vd->vqs[i].vq = NULL;
		vd->vqs[i].vector = -1;
		vd->vqs[i].shared = false;
	}
	/*
	 * A vector per queue when asked (virtio_shared_vector=0) and there are enough; otherwise
	 * (i stops short of nvqs) one for all of them.
	 */
	for (i = 0; !virtio_shared_vector && i < nvqs; i++) {
		if (!names[i])
			continue;
		v = vi_take_vector(h, vi_vq_irq, &vd->vqs[i]);
		if (v < 0)
			break;
		vd->vqs[i].vector = v;
	}
	if (i < nvqs) {
		for (i = 0; i < nvqs; i++) {
			vi_give_vector(h, vd->vqs[i].vector);
			vd->vqs[i].vector = -1;
		}
		vd->shared_vector = vi_take_vector(h, vi_shared_irq, vd);
		if (vd->shared_vector < 0) {
			dev_err(&vd->dev, "no MSI-X vector left for the queues\n");
			vd->nvqs = 0;
			return -EBUSY;
		}
		for (i = 0; i < nvqs; i++) {
			vd->vqs[i].vector = vd->shared_vector;
			vd->vqs[i].shared = true;
		}
	}

	for (i = 0; i < nvqs; i++) {
		if (!names[i]) {
			vqs[i] = NULL;
			continue;
		}
		ret = vi_setup_vq(vd, i, callbacks[i], names[i], ctx ? ctx[i] : false);
		if (ret)
			goto err;
		vqs[i] = vd->vqs[i].vq;
	}
	return 0;
err:
	vi_del_vqs(vdev);
	return ret;
}

static void vi_synchronize_cbs(struct virtio_device *vdev)
{
	struct vi_dev *vd = vdev_vi(vdev);
	unsigned int i;

	for (i = 0; i < vd->nvqs; i++)
		if (vd->vqs[i].vector >= 0)
			ivshmem_sync_vector(vd->host->idev, vd->vqs[i].vector);
}

static const char *vi_bus_name(struct virtio_device *vdev)
{
	return dev_name(&vdev_vi(vdev)->dev);
}

static const struct virtio_config_ops vi_config_ops = {
	.get = vi_get_config,
	.set = vi_set_config,
	.generation = vi_generation,
	.get_status = vi_get_status,
	.set_status = vi_set_status,
	.reset = vi_reset,
	.find_vqs = vi_find_vqs,
	.del_vqs = vi_del_vqs,
	.synchronize_cbs = vi_synchronize_cbs,
	.get_features = vi_get_features,
	.finalize_features = vi_finalize_features,
	.bus_name = vi_bus_name,
};

/* Attaching and detaching headers */

static void vi_vdev_release(struct device *dev)
{
	kfree(container_of(dev_to_virtio(dev), struct vi_vdev, vdev));
}

static void vi_dev_release(struct device *dev)
{
	struct vi_dev *vd = to_vi(dev);
	u64 i;

	/* Buffers still out when the driver went (it need not take them back): drop them. */
	for (i = 0; vd->maps && i < vd->arena_len >> VI_MIN_ALLOC_ORDER; i++) {
		if (!vd->maps[i].size)
			continue;
		gen_pool_free(vd->pool,
			      (unsigned long)vi_arena_va(vd, vd->arena + (i << VI_MIN_ALLOC_ORDER)),
			      vd->maps[i].size);
	}
	kvfree(vd->maps);
	if (vd->pool)
		gen_pool_destroy(vd->pool);
	kfree(vd);
}

/* Default arena: after the header, virtio_arena_size bytes, up to the next known header. */
static u64 vi_default_arena_end(struct vi_host *h, u64 base)
{
	u64 end = min_t(u64, h->shm_len, base + VI_HEADER_SIZE + virtio_arena_size);
	unsigned int i;

	for (i = 0; i < h->nspecs; i++)
		if (h->specs[i].base > base && h->specs[i].base < end)
			end = h->specs[i].base;
	return end;
}

static struct vi_spec *vi_spec_of(struct vi_host *h, u64 base)
{
	unsigned int i;

	for (i = 0; i < h->nspecs; i++)
		if (h->specs[i].base == base)
			return &h->specs[i];
	return NULL;
}

/* Called with h->lock held. */
static void vi_detach(struct vi_dev *vd, const char *why)
{
	struct vi_host *h = vd->host;
	struct virtio_device *vdev = vd->vdev;
	struct vi_spec *spec = vi_spec_of(h, vd->base);

	dev_info(&vd->dev, "detaching: %s\n", why);
	if (spec && READ_ONCE(vd->gone) && vi_get(vd, VI_DRIVER_PEER) == vd->me) {
		/* Nobody took the device over: the same bridge, silent. */
		spec->dead = true;
		spec->dead_peer = vi_get(vd, VI_DEVICE_PEER);
		spec->dead_generation = vi_get(vd, VI_GENERATION);
	}
	list_del(&vd->node);
	if (vdev) {
		/* The driver's remove resets the device and deletes the queues (vi_del_vqs). */
		unregister_virtio_device(vdev);
		vd->vdev = NULL;
	}
	vi_give_vector(h, vd->config_vector);
	vd->config_vector = -1;
	/* Give the claim back if it is still ours, so the next driver can take it. */
	if (vi_published(h, vd->base))
		cmpxchg((u32 *)vi_field(h, vd->base, VI_DRIVER_PEER), cpu_to_le32(vd->me),
			cpu_to_le32(VI_NO_PEER));
	device_unregister(&vd->dev);
}

/* Called with h->lock held. */
static int vi_attach(struct vi_host *h, struct vi_spec *spec, bool quiet)
{
	struct vi_vdev *vv;
	struct vi_dev *vd;
	u64 arena = spec->arena, arena_len = spec->arena_len;
	u32 peer, holder;
	int ret;

	list_for_each_entry(vd, &h->devices, node)
		if (vd->base == spec->base)
			return -EEXIST;
	if (!vi_published(h, spec->base))
		return -ENOENT;
	if (spec->dead) {
		if (le32_to_cpu(READ_ONCE(*(__le32 *)vi_field(h, spec->base, VI_DEVICE_PEER))) ==
		    spec->dead_peer &&
		    le32_to_cpu(READ_ONCE(*(__le32 *)vi_field(h, spec->base, VI_GENERATION))) ==
		    spec->dead_generation)
			return -ENODEV;
		spec->dead = false;
	}
	if (!arena_len) {
		arena = spec->base + VI_HEADER_SIZE;
		arena_len = vi_default_arena_end(h, spec->base) - arena;
	}
	if (!arena_len || arena + arena_len > h->shm_len || arena + arena_len < arena ||
	    (arena < spec->base + VI_HEADER_SIZE && arena + arena_len > spec->base)) {
		dev_err(h->dev, "virtio header %#llx: arena %#llx+%#llx is outside the memory or on the header\n",
			spec->base, arena, arena_len);
		return -EINVAL;
	}
	peer = le32_to_cpu(READ_ONCE(*(__le32 *)vi_field(h, spec->base, VI_DEVICE_PEER)));
	if (peer > 0xffff || peer == h->me) {
		if (!quiet)
			dev_err(h->dev, "virtio header %#llx names device peer %u\n", spec->base, peer);
		return -EINVAL;
	}
	holder = le32_to_cpu(cmpxchg((u32 *)vi_field(h, spec->base, VI_DRIVER_PEER),
				     cpu_to_le32(VI_NO_PEER), cpu_to_le32(h->me)));
	if (holder != VI_NO_PEER && holder != h->me) {
		if (!quiet)
			dev_info(h->dev, "virtio header %#llx is driven by peer %u\n", spec->base,
				 holder);
		return -EBUSY;
	}

	vd = kzalloc(sizeof(*vd), GFP_KERNEL);
	if (!vd)
		return -ENOMEM;
	vd->host = h;
	vd->base = spec->base;
	vd->arena = arena;
	vd->arena_len = arena_len;
	vd->me = h->me;
	vd->device_peer = peer;
	vd->config_vector = -1;
	vd->shared_vector = -1;
	mutex_init(&vd->req_lock);
	init_waitqueue_head(&vd->wq);
	device_initialize(&vd->dev);
	vd->dev.parent = h->dev;
	vd->dev.release = vi_dev_release;
	vd->dev.coherent_dma_mask = DMA_BIT_MASK(64);
	vd->dev.dma_mask = &vd->dev.coherent_dma_mask;
	set_dma_ops(&vd->dev, &vi_dma_ops);
	ret = dev_set_name(&vd->dev, "virtio@%llx", spec->base);
	if (ret)
		goto err_put;
	vd->maps = kvcalloc(arena_len >> VI_MIN_ALLOC_ORDER, sizeof(*vd->maps), GFP_KERNEL);
	vd->pool = gen_pool_create(VI_MIN_ALLOC_ORDER, -1);
	if (!vd->maps || !vd->pool) {
		ret = -ENOMEM;
		goto err_put;
	}
	ret = gen_pool_add_virt(vd->pool, (unsigned long)h->shm + arena, arena, arena_len, -1);
	if (ret)
		goto err_put;
	ret = device_add(&vd->dev);
	if (ret)
		goto err_put;
	vd->config_vector = vi_take_vector(h, vi_config_irq, vd);
	if (vd->config_vector < 0) {
		dev_err(&vd->dev, "no free MSI-X vector for the configuration answers\n");
		ret = -EBUSY;
		goto err_del;
	}
	vi_set(vd, VI_DRIVER_CONFIG_VECTOR, vd->config_vector);
	vd->generation = vi_get(vd, VI_GENERATION);

	vv = kzalloc(sizeof(*vv), GFP_KERNEL);
	if (!vv) {
		ret = -ENOMEM;
		goto err_vec;
	}
	vv->vd = vd;
	vv->vdev.id.device = vi_get(vd, VI_DEVICE_ID);
	vv->vdev.id.vendor = VIRTIO_DEV_ANY_ID;
	vv->vdev.config = &vi_config_ops;
	vv->vdev.dev.parent = &vd->dev;
	vv->vdev.dev.release = vi_vdev_release;
	vd->vdev = &vv->vdev;
	list_add_tail(&vd->node, &h->devices);
	dev_info(&vd->dev, "virtio device %u of peer %u, %u queue(s), arena %#llx+%#llx, config vector %d\n",
		 vv->vdev.id.device, peer, vi_get(vd, VI_NUM_QUEUES), arena, arena_len,
		 vd->config_vector);
	/* Probing the driver sends status requests and sets up queues: neither takes h->lock. */
	ret = register_virtio_device(&vv->vdev);
	if (ret) {
		dev_err(&vd->dev, "register_virtio_device: %d\n", ret);
		put_device(&vv->vdev.dev);
		vd->vdev = NULL;
		vi_detach(vd, "registration failed");
		return ret;
	}
	return 0;

err_vec:
	vi_give_vector(h, vd->config_vector);
err_del:
	device_del(&vd->dev);
err_put:
	cmpxchg((u32 *)vi_field(h, spec->base, VI_DRIVER_PEER), cpu_to_le32(h->me),
		cpu_to_le32(VI_NO_PEER));
	put_device(&vd->dev);
	return ret;
}

static bool vi_spec_known(struct vi_host *h, u64 base)
{
	unsigned int i;

	for (i = 0; i < h->nspecs; i++)
		if (h->specs[i].base == base)
			return true;
	return false;
}

static int vi_add_spec(struct vi_host *h, const struct vi_spec *spec)
{
	if (spec->base % VI_HEADER_SIZE || spec->base + VI_HEADER_SIZE > h->shm_len)
		return -EINVAL;
	if (vi_spec_known(h, spec->base))
		return -EEXIST;
	if (h->nspecs == VI_MAX_SPECS)
		return -ENOSPC;
	h->specs[h->nspecs++] = *spec;
	return 0;
}

/* Is base inside an attached device's header or arena (where data may look like a header)? */
static bool vi_in_use(struct vi_host *h, u64 base)
{
	struct vi_dev *vd;

	list_for_each_entry(vd, &h->devices, node)
		if ((base >= vd->arena && base < vd->arena + vd->arena_len))
			return true;
	return false;
}

static void vi_discover(struct vi_host *h)
{
	u64 base, end = min_t(u64, h->shm_len, virtio_scan_limit);
	struct vi_spec spec = {};

	for (base = 0; base + VI_HEADER_SIZE <= end; base += VI_HEADER_SIZE) {
		if (vi_in_use(h, base) || vi_spec_known(h, base) || !vi_published(h, base))
			continue;
		spec.base = base;
		if (!vi_add_spec(h, &spec))
			dev_info(h->dev, "virtio header found at %#llx\n", base);
	}
}

/* Why the attached device must go, or NULL. */
static const char *vi_check(struct vi_dev *vd)
{
	struct vi_host *h = vd->host;
	const char *why = NULL;

	if (READ_ONCE(vd->gone))
		return "the bridge stopped answering";
	if (!vi_published(h, vd->base))
		return "the header was withdrawn";
	mutex_lock(&vd->req_lock);
	if (vi_get(vd, VI_DRIVER_PEER) != vd->me)
		why = "our claim was cleared (the bridge restarted)";
	else if (vi_get(vd, VI_GENERATION) != vd->generation)
		why = "the device side reset the device (generation changed)";
	else if (vi_get(vd, VI_DEVICE_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET)
		why = "the device needs a reset (DEVICE_NEEDS_RESET)";
	mutex_unlock(&vd->req_lock);
	return why;
}

static void vi_poll(struct work_struct *work)
{
	struct vi_host *h = container_of(to_delayed_work(work), struct vi_host, poll);
	struct vi_dev *vd, *tmp;
	unsigned int i;
	const char *why;

	mutex_lock(&h->lock);
	if (h->stopping) {
		mutex_unlock(&h->lock);
		return;
	}
	list_for_each_entry_safe(vd, tmp, &h->devices, node) {
		why = vi_check(vd);
		if (why) {
			/* Requests would reach a bridge that does not know us: fail them at once. */
			WRITE_ONCE(vd->gone, true);
			wake_up(&vd->wq);
			vi_detach(vd, why);
		}
	}
	if (virtio_discover)
		vi_discover(h);
	for (i = 0; i < h->nspecs && !h->stopping; i++)
		vi_attach(h, &h->specs[i], true);
	if (!h->stopping)
		schedule_delayed_work(&h->poll, msecs_to_jiffies(virtio_poll_ms));
	mutex_unlock(&h->lock);
}

/* sysfs on /sys/class/ivshmem/ivshmemN: virtio_attach, virtio_detach, virtio_devices */

static struct vi_host *vi_host_of(struct device *dev)
{
	struct vi_host *h;

	list_for_each_entry(h, &vi_hosts, node)
		if (h->dev == dev)
			return h;
	return NULL;
}

static int vi_parse_spec(const char *s, struct vi_spec *spec)
{
	unsigned long long v[3] = {};
	int n;

	n = sscanf(s, "%lli:%lli:%lli", &v[0], &v[1], &v[2]);
	if (n != 1 && n != 3)
		return -EINVAL;
	spec->base = v[0];
	spec->arena = v[1];
	spec->arena_len = n == 3 ? v[2] : 0;
	if (n == 3 && !spec->arena_len)
		return -EINVAL;
	return 0;
}

static ssize_t virtio_attach_store(struct device *dev, struct device_attribute *attr,
				   const char *buf, size_t count)
{
	struct vi_spec spec;
	struct vi_host *h;
	int ret;

	ret = vi_parse_spec(buf, &spec);
	if (ret)
		return ret;
	mutex_lock(&vi_hosts_lock);
	h = vi_host_of(dev);
	if (h) {
		mutex_lock(&h->lock);
		ret = vi_add_spec(h, &spec);
		if (!ret)
			ret = vi_attach(h, vi_spec_of(h, spec.base), false);
		if (ret == -ENOENT)
			dev_info(h->dev, "no virtio header at %#llx yet: attaching when one is published\n",
				 spec.base);
		mutex_unlock(&h->lock);
	} else {
		ret = -ENODEV;
	}
	mutex_unlock(&vi_hosts_lock);
	return ret && ret != -ENOENT ? ret : count;
}
static DEVICE_ATTR_WO(virtio_attach);

static ssize_t virtio_detach_store(struct device *dev, struct device_attribute *attr,
				   const char *buf, size_t count)
{
	struct vi_host *h;
	struct vi_dev *vd;
	unsigned long long base;
	unsigned int i;
	int ret = -ENOENT;

	if (kstrtoull(buf, 0, &base))
		return -EINVAL;
	mutex_lock(&vi_hosts_lock);
	h = vi_host_of(dev);
	if (h) {
		mutex_lock(&h->lock);
		for (i = 0; i < h->nspecs; i++) {
			if (h->specs[i].base == base) {
				h->specs[i] = h->specs[--h->nspecs];
				ret = 0;
				break;
			}
		}
		list_for_each_entry(vd, &h->devices, node) {
			if (vd->base == base) {
				vi_detach(vd, "virtio_detach");
				ret = 0;
				break;
			}
		}
		mutex_unlock(&h->lock);
	}
	mutex_unlock(&vi_hosts_lock);
	return ret ? ret : count;
}
static DEVICE_ATTR_WO(virtio_detach);

static ssize_t virtio_devices_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vi_host *h;
	struct vi_dev *vd;
	int len = 0;

	mutex_lock(&vi_hosts_lock);
	h = vi_host_of(dev);
	if (h) {
		mutex_lock(&h->lock);
		list_for_each_entry(vd, &h->devices, node)
			len += sysfs_emit_at(buf, len, "%#llx %#llx %#llx %s\n", vd->base,
					     vd->arena, vd->arena_len,
					     vd->vdev ? dev_name(&vd->vdev->dev) : "-");
		mutex_unlock(&h->lock);
	}
	mutex_unlock(&vi_hosts_lock);
	return len;
}
static DEVICE_ATTR_RO(virtio_devices);

static struct attribute *vi_attrs[] = {
	&dev_attr_virtio_attach.attr,
	&dev_attr_virtio_detach.attr,
	&dev_attr_virtio_devices.attr,
	NULL,
};

static const struct attribute_group vi_group = {
	.attrs = vi_attrs,
};

/* The ivshmem client */

static void vi_parse_param(struct vi_host *h)
{
	char *s, *tok, *copy;
	struct vi_spec spec;

	if (!virtio || !*virtio)
		return;
	copy = kstrdup(virtio, GFP_KERNEL);
	if (!copy)
		return;
	s = copy;
	while ((tok = strsep(&s, ",")) != NULL) {
		if (!*tok)
			continue;
		if (vi_parse_spec(tok, &spec) || vi_add_spec(h, &spec))
			dev_err(h->dev, "virtio=%s: not a header place in this memory\n", tok);
	}
	kfree(copy);
}

static void vi_add(struct ivshmem_dev *idev)
{
	struct vi_host *h;
	resource_size_t len;

	h = kzalloc(sizeof(*h), GFP_KERNEL);
	if (!h)
		return;
	h->idev = idev;
	h->dev = ivshmem_device(idev);
	h->shm = ivshmem_shm(idev, &len);
	h->shm_len = len;
	h->nvectors = ivshmem_vectors(idev);
	if (!h->shm || h->nvectors < 2) {
		/* ivshmem-plain (no vectors) or no kernel mapping: nothing to drive. */
		kfree(h);
		return;
	}
	h->me = ivshmem_peer_id(idev);
	h->vec_used = bitmap_zalloc(h->nvectors, GFP_KERNEL);
	if (!h->vec_used) {
		kfree(h);
		return;
	}
	mutex_init(&h->lock);
	mutex_init(&h->vec_lock);
	INIT_LIST_HEAD(&h->devices);
	INIT_DELAYED_WORK(&h->poll, vi_poll);
	vi_parse_param(h);
	mutex_lock(&vi_hosts_lock);
	list_add_tail(&h->node, &vi_hosts);
	mutex_unlock(&vi_hosts_lock);
	if (sysfs_create_group(&h->dev->kobj, &vi_group))
		dev_warn(h->dev, "no virtio_attach attribute\n");
	schedule_delayed_work(&h->poll, 0);
}

static void vi_remove(struct ivshmem_dev *idev)
{
	struct vi_host *h = NULL, *it;
	struct vi_dev *vd;

	mutex_lock(&vi_hosts_lock);
	list_for_each_entry(it, &vi_hosts, node)
		if (it->idev == idev)
			h = it;
	if (h)
		list_del(&h->node);
	mutex_unlock(&vi_hosts_lock);
	if (!h)
		return;
	/* Waits for the attribute writers, which found h under vi_hosts_lock. */
	sysfs_remove_group(&h->dev->kobj, &vi_group);
	mutex_lock(&h->lock);
	h->stopping = true;
	mutex_unlock(&h->lock);
	cancel_delayed_work_sync(&h->poll);
	mutex_lock(&h->lock);
	while (!list_empty(&h->devices)) {
		vd = list_first_entry(&h->devices, struct vi_dev, node);
		vi_detach(vd, "the ivshmem device or the transport is going away");
	}
	mutex_unlock(&h->lock);
	/* A request that timed out meanwhile may have queued the poll again. */
	cancel_delayed_work_sync(&h->poll);
	bitmap_free(h->vec_used);
	kfree(h);
}

static struct ivshmem_client vi_client = {
	.add = vi_add,
	.remove = vi_remove,
};

static int __init vi_init(void)
{
	return ivshmem_register_client(&vi_client);
}

static void __exit vi_exit(void)
{
	ivshmem_unregister_client(&vi_client);
}

module_init(vi_init);
module_exit(vi_exit);

MODULE_DESCRIPTION("Virtio transport over ivshmem-doorbell devices (virtio-ivshmem layout 1, served by vhost-bridge)");
MODULE_LICENSE("GPL");
