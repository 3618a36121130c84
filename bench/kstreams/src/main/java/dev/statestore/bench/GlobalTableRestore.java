package dev.statestore.bench;

import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;

/**
 * Restores a GlobalKTable (persistent RocksDB store) from a topic and prints one JSON line:
 * records restored, restoration seconds (first onRestoreStart to last onRestoreEnd), seconds
 * from {@code KafkaStreams.start()} to the last onRestoreEnd, and the key count of the store.
 *
 * <p>Usage: {@code GlobalTableRestore BOOTSTRAP TOPIC STATE_DIR [TIMEOUT_S]}. The state
 * directory must be fresh (the caller makes a new one per run), so every run restores from
 * offset 0. Keys and values are restored as bytes, as Kafka Streams does for global stores:
 * it does not deserialize during restoration.
 */
public final class GlobalTableRestore {
    private GlobalTableRestore() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: GlobalTableRestore BOOTSTRAP TOPIC STATE_DIR [TIMEOUT_S]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[1];
        String stateDir = args[2];
        long timeoutS = args.length > 3 ? Long.parseLong(args[3]) : 900;

        int partitions;
        Properties adminProps = new Properties();
        adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            partitions = admin.describeTopics(Set.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                    .get(topic).partitions().size();
        }

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, "statestore-bench-" + UUID.randomUUID());
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // The same fetch sizes as the statestore consumer (statestore/kafka.py).
        props.put(StreamsConfig.globalConsumerPrefix(ConsumerConfig.FETCH_MAX_BYTES_CONFIG), 64 * 1024 * 1024);
        props.put(StreamsConfig.globalConsumerPrefix(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG), 8 * 1024 * 1024);
        props.put(StreamsConfig.globalConsumerPrefix(ConsumerConfig.RECEIVE_BUFFER_CONFIG), 4 * 1024 * 1024);
        props.put(StreamsConfig.globalConsumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), 5000);

        StreamsBuilder builder = new StreamsBuilder();
        builder.globalTable(
                topic,
                Consumed.with(Serdes.Bytes(), Serdes.Bytes()),
                Materialized.<Bytes, Bytes, KeyValueStore<Bytes, byte[]>>as("view"));

        CountDownLatch done = new CountDownLatch(partitions);
        AtomicLong restored = new AtomicLong();
        AtomicLong firstStart = new AtomicLong(Long.MAX_VALUE);
        AtomicLong lastEnd = new AtomicLong(0);
        Map<TopicPartition, Boolean> ended = new ConcurrentHashMap<>();

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                firstStart.accumulateAndGet(System.nanoTime(), Math::min);
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                restored.addAndGet(total);
                lastEnd.accumulateAndGet(System.nanoTime(), Math::max);
                if (ended.putIfAbsent(tp, Boolean.TRUE) == null) {
                    done.countDown();
                }
            }
        });

        long t0 = System.nanoTime();
        streams.start();
        boolean finished = done.await(timeoutS, TimeUnit.SECONDS);
        long keys = -1;
        if (finished) {
            ReadOnlyKeyValueStore<Bytes, Bytes> store = waitForStore(streams);
            keys = 0;
            try (KeyValueIterator<Bytes, Bytes> it = store.all()) {
                while (it.hasNext()) {
                    it.next();
                    keys++;
                }
            }
        }
        streams.close(Duration.ofSeconds(30));
        streams.cleanUp();
        System.out.printf(
                "{\"finished\": %s, \"partitions\": %d, \"records\": %d, \"restore_seconds\": %.4f,"
                        + " \"seconds_from_start\": %.4f, \"keys\": %d}%n",
                finished, partitions, restored.get(),
                finished ? (lastEnd.get() - firstStart.get()) / 1e9 : -1.0,
                finished ? (lastEnd.get() - t0) / 1e9 : -1.0,
                keys);
        System.exit(finished ? 0 : 1);
    }

    private static ReadOnlyKeyValueStore<Bytes, Bytes> waitForStore(KafkaStreams streams)
            throws InterruptedException {
        StoreQueryParameters<ReadOnlyKeyValueStore<Bytes, Bytes>> params =
                StoreQueryParameters.fromNameAndType("view", QueryableStoreTypes.keyValueStore());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (true) {
            try {
                return streams.store(params);
            } catch (RuntimeException exc) {
                if (System.nanoTime() > deadline) {
                    throw exc;
                }
                Thread.sleep(50);
            }
        }
    }
}
