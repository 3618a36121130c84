package statestore.harness;

import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Writes Avro records with Apicurio Registry's Kafka serializer, as a Java shop does.
 *
 * Usage: Produce BOOTSTRAP TOPIC REGISTRY_URL OUT COUNT EVOLVE KEY [serde.property=value ...]
 *
 * COUNT keys k-0 .. k-(COUNT-1) get one record each with the first writer schema; with
 * EVOLVE = true, every other key then gets a second record with the second writer schema
 * (a field added with a default). KEY is "string" (a plain UTF-8 key) or "avro" (a record
 * key written by the same serializer). Every record sent is written to OUT as one JSON line,
 * {"key": ..., "value": ...}, the key and value in Avro's JSON form.
 */
public final class Produce {
    static final String V1 = "{\"type\":\"record\",\"name\":\"Reading\",\"namespace\":\"statestore.harness\","
            + "\"fields\":[{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"n\",\"type\":\"int\"},"
            + "{\"name\":\"total\",\"type\":\"long\"},{\"name\":\"score\",\"type\":\"double\"},"
            + "{\"name\":\"active\",\"type\":\"boolean\"},"
            + "{\"name\":\"note\",\"type\":[\"null\",\"string\"],\"default\":null},"
            + "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}}";
    static final String V2_FIELD = ",{\"name\":\"region\",\"type\":\"string\",\"default\":\"eu\"}";
    static final String KEY = "{\"type\":\"record\",\"name\":\"ReadingKey\",\"namespace\":\"statestore.harness\","
            + "\"fields\":[{\"name\":\"id\",\"type\":\"string\"}]}";
    static final String SERIALIZER = "io.apicurio.registry.serde.avro.AvroKafkaSerializer";

    public static void main(String[] args) throws Exception {
        if (args.length < 7) {
            System.err.println("usage: Produce BOOTSTRAP TOPIC REGISTRY_URL OUT COUNT EVOLVE KEY [prop=value ...]");
            System.exit(2);
        }
        String topic = args[1];
        int count = Integer.parseInt(args[4]);
        boolean evolve = Boolean.parseBoolean(args[5]);
        boolean avroKey = args[6].equals("avro");
        Map<String, Object> serde = new HashMap<>();
        serde.put("apicurio.registry.url", args[2]);
        serde.put("apicurio.registry.auto-register", "true");
        for (int i = 7; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            serde.put(kv[0], kv[1]);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("acks", "all");
        props.put("max.block.ms", "20000");
        props.put("key.serializer", avroKey ? SERIALIZER : StringSerializer.class.getName());
        props.put("value.serializer", SERIALIZER);
        props.putAll(serde);

        Schema v1 = new Schema.Parser().parse(V1 + "]}");
        Schema v2 = new Schema.Parser().parse(V1 + V2_FIELD + "]}");
        Schema keySchema = new Schema.Parser().parse(KEY);
        int sent = 0;
        try (KafkaProducer<Object, Object> producer = new KafkaProducer<>(props);
                BufferedWriter out = Files.newBufferedWriter(Path.of(args[3]), StandardCharsets.UTF_8)) {
            for (int pass = 0; pass < (evolve ? 2 : 1); pass++) {
                for (int i = pass; i < count; i += pass + 1) {
                    GenericRecord value = new GenericData.Record(pass == 0 ? v1 : v2);
                    value.put("id", "k-" + i);
                    value.put("n", i * (pass + 1));
                    value.put("total", 5_000_000_000L + i);
                    value.put("score", i * 0.25);
                    value.put("active", i % 2 == 0);
                    value.put("note", i % 3 == 0 ? null : "note \"" + i + "\" é");
                    value.put("tags", List.of("t" + i, "pass" + pass));
                    if (pass == 1) {
                        value.put("region", "r-" + i);
                    }
                    Object key = "k-" + i;
                    String keyJson = "\"k-" + i + "\"";
                    if (avroKey) {
                        GenericRecord k = new GenericData.Record(keySchema);
                        k.put("id", "k-" + i);
                        key = k;
                        keyJson = k.toString();
                    }
                    producer.send(new ProducerRecord<>(topic, key, value)).get();
                    out.write("{\"key\": " + keyJson + ", \"value\": " + value + "}\n");
                    sent++;
                }
            }
            producer.flush();
        }
        System.out.println("produced " + sent);
    }
}
